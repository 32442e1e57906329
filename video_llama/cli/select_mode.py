"""``video-llama select-mode``: watch a video file, a file being written, or a live stream, and
decide which low-level mode fits what is seen, window by window, smoothed and calibrated.

    video-llama select-mode --cfg-path eval_configs/quickstart_action_tiny.yaml \\
        --options model.ckpt=RUN --video clip.mp4 --out events.jsonl
    video-llama select-mode ... --stream rtsp://camera/stream --label-map modes.yaml --out events.jsonl

Each line of ``--out`` is a decision (``t_start``, ``t_end``, ``mode``: the window's most probable
mode, ``p``, ``decided``: whether ``p`` reaches the threshold, ``current``: the mode after
smoothing, ``latency_ms``, ``probs``) or a mode change (``event: mode_change``, ``t``, ``from``,
``to``). The temperature and threshold are those `video-llama calibrate` wrote into the run
folder unless given. Ctrl-C (or SIGTERM) ends the run cleanly; every line is flushed as written.
"""

import argparse
import json
import signal
import sys
import time

DEFAULT_QUESTION = "What is the action shown in the displayed video?"  # the guide's question


def mode_map(label_map, labels):
    """{label: mode} from a ``prepare --label-map`` file (folder name → answer): a label written
    from a folder name maps to that folder's mode; a label that already is a mode stays itself."""
    from video_llama.cli.action_folders import load_label_map
    from video_llama.tasks.action_recognition import normalize_answer

    if not label_map:
        return {}
    by_folder = {normalize_answer(folder): mode for folder, mode in load_label_map(label_map).items()}
    return {label: by_folder.get(normalize_answer(label), label) for label in labels}


def selector_from_args(args):
    """(ModeSelector, frame side in pixels) for the model and settings the arguments name."""
    from video_llama.cli.demo import load_setup
    from video_llama.common.errors import UserError
    from video_llama.tasks.action_recognition import trained_labels
    from video_llama.tasks.calibration import decision_settings
    from video_llama.tasks.mode_selection import ModeSelector, SelectorSettings

    setup = load_setup(args.cfg_path, args.options, args.device, args.plugins)
    run_cfg, ckpt = setup.config.run_cfg, setup.model.cfg.get("ckpt")
    labels = list(run_cfg.get("labels") or trained_labels(ckpt) or [])
    if not labels:
        raise UserError(f"which labels to score is unknown: model.ckpt={ckpt!r} is not a run of ours with a labels.json "
                        "beside its training annotations; set run.labels=[label1,label2,...]")
    temperature, threshold, unknown = decision_settings(run_cfg, ckpt)
    settings = SelectorSettings(
        window_s=args.window_s, stride_s=args.stride_s,
        temperature=args.temperature if args.temperature is not None else temperature,
        threshold=args.threshold if args.threshold is not None else threshold, unknown=unknown,
        hold=args.hold, evidence=args.evidence, timestamps=setup.timestamps, length_norm=bool(run_cfg.length_norm))
    processor = setup.vis_processor
    selector = ModeSelector(setup.model, labels, args.question, processor.plan(None), processor.config.n_frms,
                            mode_map(args.label_map, labels), settings)
    return selector, processor.config.image_size


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def run(selector, frames, out, status=None):
    """Feed ``frames`` ((t, frame) pairs) to ``selector``, writing every event to ``out`` (flushed).
    Returns (decisions, mode changes, seconds of stream read, why it ended early or None, and the
    StreamBrokeOff when the stream broke off, else None)."""
    from video_llama.processors.frame_stream import StreamBrokeOff

    decisions = changes = 0
    seen, ended, broke = 0.0, None, None
    try:
        for t, frame in frames:
            seen = t
            for event in selector.push(t, frame):
                out.write(json.dumps(event) + "\n")
                out.flush()
                if "event" in event:
                    changes += 1
                else:
                    decisions += 1
                    if status:
                        status(event)
    except (_Stop, KeyboardInterrupt) as err:
        ended = f"stopped by {err if isinstance(err, _Stop) else 'SIGINT'}"
    except StreamBrokeOff as err:  # what was decided before is in the file
        broke, seen = err, err.seconds
    return decisions, changes, seen, ended, broke


def status_line(event):
    """The live one-line status on a terminal."""
    shown = event["mode"] if event["decided"] else f"{event['mode']}?"
    sys.stderr.write(f"\r[{event['t_end']:8.1f} s] mode {event['current'] or '-':<16} window {shown:<16} "
                     f"p {event['p']:.2f}  {event['latency_ms']:6.1f} ms ")
    sys.stderr.flush()


def main(argv=None):
    from video_llama.cli.jobs import add_config_arguments

    parser = argparse.ArgumentParser(prog="video-llama select-mode", description=__doc__.splitlines()[0])
    add_config_arguments(parser, "evaluation YAML (model.ckpt: the trained run)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="a video file")
    source.add_argument("--stream", help="a stream URL (rtsp://, http://, ...) or a V4L2 device (/dev/video0)")
    parser.add_argument("--follow", action="store_true",
                        help="--video is still being written (mkv/ts): wait for more until it stops growing")
    parser.add_argument("--out", required=True, help="JSONL of decisions and mode changes")
    parser.add_argument("--window-s", type=float, default=2.0, help="seconds of video per decision")
    parser.add_argument("--stride-s", type=float, default=0.5, help="seconds between decisions")
    parser.add_argument("--label-map", help="the `prepare --label-map` file: label (folder) -> mode")
    parser.add_argument("--question", default=DEFAULT_QUESTION, help="the question the model was trained with")
    parser.add_argument("--hold", type=int, default=2, help="windows in a row a new mode must win before switching")
    parser.add_argument("--evidence", type=float, help="or the summed probability margin that switches sooner")
    parser.add_argument("--threshold", type=float, help="decide at this probability or more (default: calibrate's)")
    parser.add_argument("--temperature", type=float, help="softmax temperature (default: calibrate's, else 1)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the config's run.device)")
    args = parser.parse_args(argv)
    if args.hold < 1:
        parser.error("--hold must be at least 1")

    from video_llama.processors import frame_stream

    if not args.follow:  # a bad source fails before the model loads (a followed file may not be readable yet)
        frame_stream.check_source(args.video or args.stream)
    selector, size = selector_from_args(args)
    frames = frame_stream.stream_frames(args.video or args.stream, size, follow=args.follow)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    started = time.perf_counter()
    try:
        with open(args.out, "w") as out:
            decisions, changes, seen, ended, broke = run(selector, frames, out, status_line if sys.stderr.isatty() else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if broke is not None:
        print(f"error: {broke}; the {decisions + changes} event(s) decided before are in {args.out}", file=sys.stderr)
        return 1
    print(f"{decisions} decisions over {seen:.1f} s of video in {time.perf_counter() - started:.1f} s, "
          f"{changes} mode change(s), mode at the end: {selector.current}{f' ({ended})' if ended else ''}; "
          f"events in {args.out}")
    return 0
