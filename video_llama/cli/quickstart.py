"""``make quickstart``: the guide's example on CPU. Synthetic clips of five context classes (the
same motion means another mode in front of a glass pane) → prepare → finetune a tiny Video-LLaMA on
windows as a stream shows them → clip top-1 in both evaluation modes → calibrate on held-out
windows → the robot's mode chosen over continuous held-out recordings, against their timelines.

Every step is one of the project's own commands or library calls, so the same path works on a
real folder.
"""

import functools
import json
import shutil
import time
from pathlib import Path

from video_llama.common.config import PROMPTS_DIR
from video_llama.conversation import GUIDE_QUESTION
from video_llama.data_tools.action_folders import load_label_map, prepare
from video_llama.data_tools.synthetic import CONTEXT_LABEL_MAP, write_context_dataset, write_recording
from video_llama.data_tools.tiny_llm import write_tiny_llm
from video_llama.jobs.calibrate import calibrate
from video_llama.jobs.chat import load_setup
from video_llama.jobs.experiment import evaluate, run_job, train
from video_llama.processors.frame_stream import stream_frames
from video_llama.tasks.mode_selection import selector_for_run
from video_llama.tasks.stream_evaluation import pooled, replay_recordings, stream_report

ROOT = Path("output/quickstart")
TINY_LLM = Path("output/tiny-llm")
TRAIN_CONFIG = "train_configs/quickstart_stream_tiny.yaml"
EVAL_CONFIG = "eval_configs/quickstart_stream_tiny.yaml"
QUESTIONS = PROMPTS_DIR / "action_question_guide.txt"  # one question: see the file
PER_CLASS = 400  # 320 training, 40 validation and 40 test clips per class (the 80/10/10 split)
RECORDINGS, SEGMENTS = 3, 12  # held-out recordings (seeds the clips never used), actions in each
TARGET_ERROR = 0.05  # calibrate's abstention threshold: at most this share of errors among decided windows


def main(argv=None):
    start = time.monotonic()
    if not (TINY_LLM / "config.json").is_file():
        write_tiny_llm(TINY_LLM)
    print(f"[1/7] tiny LLM: {TINY_LLM}")
    videos = ROOT / "videos"
    if not (videos / CONTEXT_LABEL_MAP).is_file():  # absent, or the motion-only classes of an older quickstart
        shutil.rmtree(videos, ignore_errors=True)
        write_context_dataset(videos, per_class=PER_CLASS, seed=0)
    print(f"[2/7] synthetic clips of 5 context classes, label map {videos / CONTEXT_LABEL_MAP}: "
          + ", ".join(f"{k} -> {v}" for k, v in load_label_map(videos / CONTEXT_LABEL_MAP).items()))
    report, labels = prepare(videos, ROOT / "annotations", seed=0, n_frms=16, questions_file=QUESTIONS)  # the recipe's frames
    print(report.table(labels))
    print(f"[3/7] annotations: {ROOT / 'annotations'}")
    summary = train(["--cfg-path", TRAIN_CONFIG])
    run_dir = summary["run_dir"]
    print(f"[4/7] trained {summary['steps']} iterations on 2 s windows: final loss {summary['final_loss']:.4f}; "
          f"best checkpoint {summary['best_checkpoint']} in {run_dir}")
    clip_top1 = {}
    for mode in ("rank", "generate"):
        result = evaluate(["--cfg-path", EVAL_CONFIG, "--options", f"model.ckpt={run_dir}", f"run.eval_mode={mode}"])
        metrics = json.loads((Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test" / "metrics.json").read_text())
        clip_top1[mode] = metrics
    print("[5/7] held-out clips (a 2 s window of each test clip): "
          + "; ".join(f"{mode} top-1 {m['top1']:.3f} ({m['correct']}/{m['n']})" for mode, m in clip_top1.items())
          + f"; chance {1 / len(clip_top1['rank']['labels']):.2f}")
    calibration = run_job(["--cfg-path", EVAL_CONFIG, "--options", f"model.ckpt={run_dir}", "run.test_splits=[val]",
                           "run.eval_mode=rank"], "calibrate", lambda runner: calibrate(runner, "val", TARGET_ERROR),
                          evaluating=True)
    decides = calibration["threshold"] < 1.0
    print(f"[6/7] calibrated on {calibration['n']} held-out windows (some over a cut between two clips): "
          f"temperature {calibration['temperature']:.3f}; "
          + (f"threshold {calibration['threshold']:.3f} for at most {TARGET_ERROR:.0%} errors among decided windows"
             if decides else f"no threshold keeps errors under {TARGET_ERROR:.0%} at this accuracy "
             f"({calibration['accuracy']:.3f}), so the stream figures below decide every window"))
    recordings = []
    for i in range(RECORDINGS):
        video = ROOT / "recordings" / f"recording_{i}.mp4"
        recordings.append((video, write_recording(video, SEGMENTS, seed=1000 + i)))
    table = stream_figures(run_dir, recordings, videos / CONTEXT_LABEL_MAP)
    print(f"[7/7] the robot's mode over {RECORDINGS} held-out recordings of {SEGMENTS} actions each "
          f"({ROOT / 'recordings'}), 2 s windows every 0.5 s, after {(time.monotonic() - start) / 60:.1f} min:\n{table}")
    return 0


def stream_figures(run_dir, recordings, label_map_file):
    """The stream table of the run's selector over ``recordings`` [(video, timeline)], pooled: the
    model scores every window once, and each smoothing and the calibrated threshold are replayed."""
    setup = load_setup(EVAL_CONFIG, [f"model.ckpt={run_dir}"])
    make = functools.partial(selector_for_run, setup.model, setup.vis_processor, setup.config.run_cfg, GUIDE_QUESTION,
                             load_label_map(label_map_file), timestamps=setup.timestamps)
    threshold = make().settings.threshold
    if threshold is not None and threshold >= 1.0:  # calibrate found no threshold for the target error
        threshold = None
    size = setup.vis_processor.config.image_size
    tallies = pooled(replay_recordings(make, recordings, lambda video: stream_frames(video, size), holds=(1, 2),
                                       threshold=threshold))
    return stream_report([("stream recipe", decisions, smoothing, tally.metrics())
                          for (decisions, smoothing), tally in tallies.items()])


if __name__ == "__main__":
    raise SystemExit(main())
