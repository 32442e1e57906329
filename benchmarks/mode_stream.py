"""The mode selector on a long video of known segments: how often it holds the right mode, how
late it switches, how often it switches for nothing (with and without smoothing), and how long a
decision takes on this machine.

The video: ``--segments`` segments of held-out test clips (each segment ``--clips-per-segment``
clips of one class played one after another; consecutive segments differ in class), written as one
file and read back through the same frame stream ``select-mode`` uses.

    .venv/bin/python benchmarks/mode_stream.py --cfg-path eval_configs/quickstart_action_tiny.yaml \
        --options model.ckpt=output/quickstart/runs/<run> [--window-s 3] [--stride-s 0.5]

Measures, per smoothing (``hold`` windows in a row before a switch; 1 = none):
- window accuracy: the smoothed mode at each decision equals the true class at its end;
- segment accuracy: the mode held over most of a segment's decisions is its class;
- switch delay: seconds from a true change to the reported switch to the new class (median);
- spurious switches per minute: switches that are not the first switch to a segment's class.
Scores are computed once; the smoothings replay the same window decisions.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_video(anno, videos_dir, labels, segments, per_segment, seed, out):
    """Write the long video; returns [(start s, end s, label)] of its segments."""
    import av

    from video_llama.cli.video_writer import write_video

    records = json.loads(Path(anno).read_text())
    by_label = {label: [r["video"] for r in records if r["QA"][0]["a"] == label] for label in labels}
    rng = np.random.default_rng(seed)
    frames, spans, previous, fps = [], [], None, 8
    for _ in range(segments):
        label = rng.choice([l for l in labels if l != previous and by_label[l]])
        start = len(frames) / fps
        for name in rng.choice(by_label[label], per_segment, replace=False):
            with av.open(str(Path(videos_dir) / name)) as container:
                frames += [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        spans.append((start, len(frames) / fps, str(label)))
        previous = label
    write_video(out, np.stack(frames), fps=fps)
    return spans


def truth_at(spans, t):
    return next((label for start, end, label in spans if start <= t < end), spans[-1][2])


def replay(windows, hold, threshold=None, evidence=None):
    """The smoothed mode after each window, and the switches [(t, mode)], for one smoothing and
    abstention threshold (None: every window decides)."""
    from video_llama.tasks.calibration import decide
    from video_llama.tasks.mode_selection import Hysteresis

    smoother, modes, switches = Hysteresis(hold, evidence), [], []
    for w in windows:
        choice, _ = decide(list(w["probs"].values()), list(w["probs"]), threshold)
        if smoother.observe(w["probs"], choice) is not None:
            switches.append((w["t_end"], smoother.current))
        modes.append(smoother.current)
    return modes, switches


def score(spans, windows, modes, switches):
    truths = [truth_at(spans, w["t_end"]) for w in windows]
    window_acc = float(np.mean([m == t for m, t in zip(modes, truths)]))
    segment_hits = []
    for start, end, label in spans:
        held = [m for w, m in zip(windows, modes) if start <= w["t_end"] < end]
        segment_hits.append(bool(held) and max(set(held), key=held.count) == label)
    delays, useful = [], set()
    for start, end, label in spans[1:]:
        hit = next(((t, m) for t, m in switches if start <= t < end and m == label), None)
        if hit:
            delays.append(hit[0] - start)
            useful.add(hit)
    first = next(((t, m) for t, m in switches if m == spans[0][2] and t < spans[0][1]), None)
    useful.add(first)
    minutes = spans[-1][1] / 60
    return {"window_acc": window_acc, "segment_acc": float(np.mean(segment_hits)),
            "delay_median": float(np.median(delays)) if delays else None, "missed": len(spans) - 1 - len(delays),
            "spurious_per_min": (len([s for s in switches if s not in useful])) / minutes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", default=str(REPO / "eval_configs" / "quickstart_action_tiny.yaml"))
    parser.add_argument("--options", nargs="+", default=[])
    parser.add_argument("--anno", default=str(REPO / "output" / "quickstart" / "annotations" / "test.json"))
    parser.add_argument("--videos-dir", default=str(REPO / "output" / "quickstart" / "videos"))
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--clips-per-segment", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--stride-s", type=float, default=0.5)
    parser.add_argument("--holds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from video_llama.cli.select_mode import DEFAULT_QUESTION
    from video_llama.cli.demo import load_setup
    from video_llama.processors.frame_stream import stream_frames
    from video_llama.tasks.action_recognition import trained_labels
    from video_llama.tasks.calibration import decision_settings
    from video_llama.tasks.mode_selection import ModeSelector, SelectorSettings

    torch.set_num_threads(1)
    setup = load_setup(args.cfg_path, args.options)
    ckpt = setup.model.cfg.get("ckpt")
    labels = list(setup.config.run_cfg.get("labels") or trained_labels(ckpt))
    temperature, threshold, unknown = decision_settings(setup.config.run_cfg, ckpt)
    with tempfile.TemporaryDirectory() as work:
        video = Path(work) / "long.mp4"
        spans = build_video(args.anno, args.videos_dir, labels, args.segments, args.clips_per_segment, args.seed, video)
        settings = SelectorSettings(window_s=args.window_s, stride_s=args.stride_s, temperature=temperature,
                                    threshold=None, unknown=unknown, hold=1, timestamps=setup.timestamps)
        selector = ModeSelector(setup.model, labels, DEFAULT_QUESTION, setup.vis_processor.plan(None),
                                setup.vis_processor.config.n_frms, settings=settings)
        windows = [e for t, frame in stream_frames(video, setup.vis_processor.config.image_size)
                   for e in selector.push(t, frame) if "event" not in e]
    latency = np.array([w["latency_ms"] for w in windows])
    print(f"{len(spans)} segments ({args.clips_per_segment} held-out clips each) over {spans[-1][1]:.0f} s, "
          f"{len(windows)} windows of {args.window_s} s every {args.stride_s} s; temperature {temperature:.3f}; "
          f"one CPU thread\n")
    print("| decisions | smoothing | window accuracy | segment accuracy | switch delay (median s) | missed changes "
          "| spurious switches / min | windows decided |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, level in [("every window", None)] + ([(f"p >= {threshold:.2f} (calibrated)", threshold)] if threshold else []):
        decided = float(np.mean([level is None or w["p"] >= level for w in windows]))
        for hold in args.holds:
            result = score(spans, windows, *replay(windows, hold, level))
            smoothing = "none (hold 1)" if hold == 1 else f"hold {hold}"
            delay = "n/a" if result["delay_median"] is None else f"{result['delay_median']:.2f}"
            print(f"| {name} | {smoothing} | {result['window_acc']:.3f} | {result['segment_acc']:.3f} | {delay} | "
                  f"{result['missed']} of {len(spans) - 1} | {result['spurious_per_min']:.2f} | {decided:.2f} |")
    print(f"\ndecision latency per window: p50 {np.percentile(latency, 50):.1f} ms, p95 {np.percentile(latency, 95):.1f} ms")


if __name__ == "__main__":
    main()
