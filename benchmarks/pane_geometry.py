"""Does a context model see *over the glass*, or one shape of glass? Clip top-1 of trained runs on
context-class clips whose pane is a wide band along the top or bottom of the frame (the geometry of
`video-llama synth --stream`'s recordings), which the training clips never show: their panes are
0.5-0.8 frame widths on each side, anywhere.

Why: a run can score 0.96 on its validation clips and still miss most windows over the pane in the
recordings (docs/streams.md, "Every frame of the window"): what it learnt was a shape of pane, not
the hand over glass. This measures that on clips, one class at a time, without a timeline.

    .venv/bin/python benchmarks/pane_geometry.py --out /tmp/pane_band \
        --runs s42=output/quickstart/runs/RUN [--runs NAME=RUN ...] [--per-class 30] [--seed 5] \
        [--options datasets.webvid_instruct.vis_processor.eval.n_frms=16]

Each run is evaluated with eval_configs/quickstart_stream_tiny.yaml (rank mode, a 2 s window in the
middle of each clip) on the clips, asked the quickstart's question.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from video_llama.cli.quickstart import EVAL_CONFIG, QUESTIONS  # the quickstart's question: the tiny LLM knows no other
from video_llama.data_tools.action_folders import prepare
from video_llama.data_tools.synthetic import (CONTEXT_ACTIONS, EITHER, OPEN, PANE, place_path, random_scene,
                                              recording_pane, render_hand, with_pane)
from video_llama.data_tools.video_writer import write_video
from video_llama.jobs.experiment import evaluate


def band_clip(label, rng, seconds=5.0, fps=8):
    """(uint8 frames, scene, (xs, ys) path) of one clip of ``label`` in a scene with a band-shaped pane."""
    motion, where, _ = CONTEXT_ACTIONS[label]
    dx, dy = motion(np.arange(round(seconds * fps)) / fps, rng)
    while True:  # no room for this path over (or beside) this band: another scene
        scene = with_pane(random_scene(rng), recording_pane(rng), rng)
        placed = place_path(dx, dy, where if where != EITHER else (PANE if rng.random() < 0.5 else OPEN), scene, rng)
        if placed is not None:
            return render_hand(scene, *placed, rng), scene, placed


def write_band_clips(videos, per_class, seed, seconds=5.0, fps=8):
    """``per_class`` clips of each context class, ``videos/<class>/<class>_<n>.mp4``."""
    rng = np.random.default_rng(seed)
    for label in CONTEXT_ACTIONS:
        (videos / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            write_video(videos / label / f"{label}_{n}.mp4", band_clip(label, rng, seconds, fps)[0], fps=fps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the clips, annotations and evaluations")
    parser.add_argument("--runs", action="append", required=True, metavar="NAME=RUN", help="a training run folder")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--options", nargs="+", default=[], help="evaluation overrides, as evaluate.py takes them")
    args = parser.parse_args(argv)
    videos, anno = args.out / "videos", args.out / "annotations"
    if not videos.is_dir():
        write_band_clips(videos, args.per_class, args.seed)
    prepare(videos, anno, questions_file=QUESTIONS, ratios=(0.0, 0.0, 1.0), seed=0)
    rows = []
    for name, run in (spec.split("=", 1) for spec in args.runs):
        result = evaluate(["--cfg-path", EVAL_CONFIG, "--options", f"model.ckpt={run}",
                           f"datasets.webvid_instruct.build_info.anno_dir.test={anno / 'test.json'}",
                           f"datasets.webvid_instruct.build_info.videos_dir={videos}",
                           f"run.output_dir={args.out / 'eval'}", *args.options])
        metrics = json.loads((Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test" / "metrics.json").read_text())
        rows.append((name, metrics))
    labels = rows[0][1]["labels"]
    print("| run | top-1 | " + " | ".join(labels) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in labels) + " |")
    for name, m in rows:
        print(f"| {name} | {m['top1']:.3f} | " + " | ".join(f"{m['per_class'][label]:.3f}" for label in labels) + " |")


if __name__ == "__main__":
    main()
