"""Stream figures of the mode selector on recordings with a ground-truth timeline, models side by side.

How often the robot is in the right mode, how late it switches, how often it switches for
nothing, and how long a decision takes on this machine.

    # recordings with their timelines (`video-llama synth --stream` writes both), pooled:
    .venv/bin/python benchmarks/mode_stream.py \\
        --models clip=eval_configs/quickstart_action_tiny.yaml:output/quickstart/runs/<clip run> \\
        --models stream=eval_configs/quickstart_stream_tiny.yaml:output/quickstart/runs/<stream run> \\
        --video rec1.mp4 --video rec2.mp4 [--timeline rec1.timeline.json --timeline rec2.timeline.json] \\
        [--label-map modes.yaml] [--window-s 2] [--stride-s 0.5] [--holds 1 2 3]
    # no --video: one long video of held-out test clips (``--segments`` segments of
    # ``--clips-per-segment`` clips of one class; consecutive segments differ), timed by this script
    .venv/bin/python benchmarks/mode_stream.py --options model.ckpt=output/quickstart/runs/<run>

Each model is run once per recording through the frame stream ``select-mode`` reads (windows of
``--window-s`` seconds, default the eval processor's ``window_s`` or 2 s, every ``--stride-s``);
every smoothing (hold N windows before a switch; 1 = none) and the model's calibrated threshold
are replayed on those scores. The figures (video_llama/tasks/stream_evaluation.py), pooled over
the recordings (every window, change and minute counted once):

- window top-1: the window's own top mode is the true mode at the window's end;
- within one mode: window top-1 of the windows whose frames all lie in one segment of one mode;
- across a change: window top-1 of the others, which hold a change of mode (also printed by the
  mode at their end: how soon a change to rest, say, is recognised, and by the time since the
  change: how many windows answer the new mode, the old one, or a third, which is what makes a
  selector switch twice);
- windows decided: share of windows at or above the threshold; accuracy on decided: their top-1;
- smoothed accuracy: the mode the robot holds after a window is the true mode at its end;
- switch delay median / p95: seconds from a true change to the first switch to the new mode
  within its segment; missed changes: changes never followed within their segment;
- spurious switches / min: switches that are not the first switch to their segment's mode
  (switches to the abstain label included), per minute of recording;
- decision latency p50 / p95: milliseconds from a window's last frame to its decision.

Consecutive timeline segments that map to one mode are one segment (no true change between them);
time between segments is unlabeled and counts in no figure.
With several recordings a second table gives each figure's range over the recordings.
"""

import argparse
import functools
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_video(anno, videos_dir, segments, per_segment, seed, out, fps=8):
    """Write the long video of held-out clips; returns its timeline (the ``synth --stream`` format)."""
    import av

    from video_llama.data_tools.video_writer import write_video

    records = json.loads(Path(anno).read_text())
    labels = sorted({r["QA"][0]["a"] for r in records})
    by_label = {label: [r["video"] for r in records if r["QA"][0]["a"] == label] for label in labels}
    rng = np.random.default_rng(seed)
    frames, spans, previous = [], [], None
    for _ in range(segments):
        label = str(rng.choice([l for l in labels if l != previous and len(by_label[l]) >= per_segment]))
        start = len(frames) / fps
        for name in rng.choice(by_label[label], per_segment, replace=False):
            with av.open(str(Path(videos_dir) / name)) as container:
                frames += [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        spans.append({"start": start, "end": len(frames) / fps, "label": label})
        previous = label
    write_video(out, np.stack(frames), fps=fps)
    return {"video": str(out), "fps": float(fps), "duration": len(frames) / fps, "segments": spans}


def parse_model(text):
    """``NAME=EVAL_CFG[:CKPT]`` → (name, config path, checkpoint or None)."""
    name, _, rest = text.partition("=")
    cfg, _, ckpt = rest.partition(":")
    if not name or not cfg:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=EVAL_CFG[:CKPT]")
    return name, cfg, ckpt or None


def load_selector(cfg, ckpt, options, args):
    """(a function making a fresh selector that scores every window, with hold 1 since the replays
    smooth; its frame side in pixels; the calibrated threshold or None), built as ``select-mode``
    builds one."""
    import torch

    from video_llama.data_tools.action_folders import load_label_map
    from video_llama.jobs.chat import load_setup
    from video_llama.common.dist_utils import set_cpu_threads
    from video_llama.conversation import GUIDE_QUESTION
    from video_llama.tasks.mode_selection import selector_for_run

    setup = load_setup(cfg, [*options, *([f"model.ckpt={ckpt}"] if ckpt else [])])
    set_cpu_threads(setup.config.run_cfg, args.threads)  # as select-mode sets them, unless --threads
    print(f"{cfg}: torch uses {torch.get_num_threads()} CPU thread(s)")
    label_map = load_label_map(args.label_map) if args.label_map else None
    make = functools.partial(selector_for_run, setup.model, setup.vis_processor, setup.config.run_cfg, GUIDE_QUESTION,
                             label_map, window_s=args.window_s, stride_s=args.stride_s, hold=1,
                             timestamps=setup.timestamps)
    return make, setup.vis_processor.config.image_size, make().settings.threshold


def spread_report(rows):
    """A markdown table of each figure's min–max over the recordings; ``rows`` are
    ``(model, decisions, smoothing, [metrics per recording])``."""
    figures = [("window_top1", 3), ("inside_top1", 3), ("smoothed_accuracy", 3), ("delay_median_s", 2),
               ("spurious_per_min", 2)]
    lines = ["| model | decisions | smoothing | window top-1 | within one mode | smoothed accuracy "
             "| switch delay median s | spurious switches / min |", "| --- | --- | --- |" + " ---: |" * len(figures)]
    for name, decisions, smoothing, per_recording in rows:
        cells = []
        for key, digits in figures:
            values = [m[key] for m in per_recording if m[key] is not None]
            cells.append(f"{min(values):.{digits}f} – {max(values):.{digits}f}" if values else "n/a")
        lines.append(f"| {name} | {decisions} | {smoothing} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=parse_model, action="append", metavar="NAME=EVAL_CFG[:CKPT]",
                        help="a model to compare (repeatable); default: --cfg-path, named 'model'")
    parser.add_argument("--cfg-path", default=str(REPO / "eval_configs" / "quickstart_action_tiny.yaml"))
    parser.add_argument("--options", nargs="+", default=[], help="config overrides for every model")
    parser.add_argument("--video", action="append", default=[], help="a recording (repeatable)")
    parser.add_argument("--timeline", action="append", default=[],
                        help="the timeline JSON of each --video, in order (default: REC.timeline.json beside REC.mp4)")
    parser.add_argument("--label-map", help="the `prepare --label-map` file: label (folder) -> mode")
    parser.add_argument("--anno", default=str(REPO / "output" / "quickstart" / "annotations" / "test.json"),
                        help="without --video: the held-out clips to build a video from")
    parser.add_argument("--videos-dir", default=str(REPO / "output" / "quickstart" / "videos"))
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--clips-per-segment", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window-s", type=float, help="default: the eval processor's window_s, else 2")
    parser.add_argument("--stride-s", type=float, default=0.5)
    parser.add_argument("--holds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--evidence", type=float, help="also switch when the summed margin reaches this")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: as select-mode sets them, from the model's run config)")
    parser.add_argument("--save-windows", metavar="FILE.jsonl",
                        help="also write every scored window (one JSON line per model and recording: its "
                             "segments in modes and its windows), to study smoothings without the model")
    args = parser.parse_args()
    if args.timeline and len(args.video) != len(args.timeline):
        parser.error(f"{len(args.video)} --video but {len(args.timeline)} --timeline: give one timeline per video")

    from video_llama.data_tools.synthetic import read_timeline, timeline_path
    from video_llama.common.errors import UserError
    from video_llama.processors.frame_stream import check_source, stream_frames
    from video_llama.tasks.stream_evaluation import pooled, replay_recordings, stream_report, timeline_modes

    models = args.models or [("model", args.cfg_path, None)]
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {os.cpu_count()} CPU threads")
    rows, spread, saved = [], [], []
    with tempfile.TemporaryDirectory() as work:
        if args.video:
            timelines = args.timeline or [timeline_path(video) for video in args.video]
            try:  # an unreadable recording or timeline fails before any model loads
                for video in args.video:
                    check_source(video)
                recordings = [(video, read_timeline(timeline)) for video, timeline in zip(args.video, timelines)]
            except UserError as err:
                raise SystemExit(f"error: {err}") from None
        else:
            video = Path(work) / "long.mp4"
            recordings = [(video, build_video(args.anno, args.videos_dir, args.segments, args.clips_per_segment,
                                              args.seed, video))]
            print(f"recording: {args.segments} segments of {args.clips_per_segment} held-out clips from {args.anno}")
        for video, timeline in recordings:
            segments = timeline["segments"]
            print(f"recording {video}: {len(segments)} segments over "
                  f"{max(s['end'] for s in segments) - min(s['start'] for s in segments):.1f} s")
        for name, cfg, ckpt in models:
            make, size, threshold = load_selector(cfg, ckpt, args.options, args)
            selector = make()
            settings, label_map = selector.settings, selector.label_map
            try:  # every timeline in this model's modes before the first window is scored
                for _, timeline in recordings:
                    timeline_modes(timeline, selector.labels, label_map)
            except ValueError as err:
                raise SystemExit(f"error: model {name}: {err}") from None
            started = time.perf_counter()
            scored = [] if args.save_windows else None
            per_recording = replay_recordings(make, recordings, lambda video: stream_frames(video, size), args.holds,
                                              threshold, args.evidence, scored)
            if scored is not None:
                saved += [json.dumps({"model": name, "video": str(video), "threshold": threshold,
                                      "segments": segments, "windows": windows})
                          for (video, _), (segments, windows) in zip(recordings, scored)]
            print(f"model {name}: {cfg}{f' with {ckpt}' if ckpt else ''}; modes {selector.modes}; "
                  f"{settings.window_s:g} s windows of {selector.n_frms} frames every {settings.stride_s:g} s; "
                  f"temperature {settings.temperature:.3f}, threshold "
                  f"{'none' if threshold is None else f'{threshold:.3f}'}; "
                  f"scored in {time.perf_counter() - started:.0f} s on {selector.model.device}")
            for key, tally in pooled(per_recording).items():
                rows.append((name, *key, tally.metrics()))
                spread.append((name, *key, [tallies[key].metrics() for tallies in per_recording]))
            by_mode = rows[-1][-1]["across_by_mode"]  # the windows' own top modes: the same for every smoothing
            print(f"model {name}: windows across a change, right by the mode at their end: "
                  + ", ".join(f"{mode} {right} of {n}" for mode, (right, n) in by_mode.items()))
            after = rows[-1][-1]["after_change"]
            print(f"model {name}: windows ending after a change, their top mode the new / the old / another: "
                  + ", ".join(f"{since:g}-{since + 0.5:g} s {c['new']} / {c['old']} / {c['other']}"
                              for since, c in after.items()))
    if args.save_windows:
        Path(args.save_windows).write_text("".join(line + "\n" for line in saved))
        print(f"windows of every model and recording: {args.save_windows}")
    print()
    print(stream_report(rows))
    if len(recordings) > 1:
        print(f"\nrange over the {len(recordings)} recordings (min – max):\n")
        print(spread_report(spread))


if __name__ == "__main__":
    main()
