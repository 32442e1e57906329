"""``video-llama select-mode``: watch a video file, a file being written, or a live stream, and
decide which low-level mode fits what is seen, window by window, smoothed and calibrated.

    video-llama select-mode --cfg-path eval_configs/quickstart_action_tiny.yaml \\
        --options model.ckpt=RUN --video clip.mp4 --out events.jsonl
    video-llama select-mode ... --stream rtsp://camera/stream --label-map modes.yaml --out events.jsonl

Each line of ``--out`` is a decision (``t_start``, ``t_end``, ``mode``: the window's most probable
mode, ``p``, ``decided``: whether ``p`` reaches the threshold, ``current``: the mode after
smoothing, ``latency_ms``, ``probs``) or a mode change (``event: mode_change``, ``t``, ``from``,
``to``). The temperature and threshold are those `video-llama calibrate` wrote into the run
folder unless given. A model with the audio branch also hears each window's stretch of the source's
sound (``sound``: whether it did; ``--no-sound``: frames alone). Ctrl-C (or SIGTERM) ends the run cleanly; every line is flushed as written.
``--out -`` writes the lines to stdout for a controller to read; the summary and the live status
then go to stderr.

A live source that sends no frame for ``--stall-s`` seconds ends the run instead of hanging; with
``--reconnect`` one that drops or stalls is opened again: stream time runs on across the gap, and
the first decision after it comes a whole window later (no window mixes frames from both sides).

Exit codes: 0 the source ended (or Ctrl-C/SIGTERM stopped the run); 1 the source broke off, or
could not be reopened within ``--reconnect-max-s``; 2 a problem with the command, config or source
found before the run; 3 the live source stalled; 130 Ctrl-C before the run started. After 1 and 3
every decision made before is in the output.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time

from video_llama.common import dist_utils
from video_llama.conversation import GUIDE_QUESTION
from video_llama.data_tools.action_folders import load_label_map
from video_llama.jobs.chat import load_setup
from video_llama.jobs.experiment import add_config_arguments, experiment
from video_llama.processors import frame_stream
from video_llama.processors.audio import SoundBuffer
from video_llama.tasks.mode_selection import selector_for_run

STALLED = 3  # the exit code of a live source that stalled


def selector_from_args(args):
    """(ModeSelector, frame side in pixels) for the model and settings the arguments name."""
    setup = load_setup(*experiment(args), args.device, args.plugins)
    run_cfg = setup.config.run_cfg
    dist_utils.set_cpu_threads(run_cfg)
    sound = SoundBuffer() if setup.sound_processor is not None and not args.no_sound else None  # the audio branch
    selector = selector_for_run(setup.model, setup.vis_processor, run_cfg, args.question,
                                load_label_map(args.label_map) if args.label_map else None, sound,
                                window_s=args.window_s, stride_s=args.stride_s, temperature=args.temperature,
                                threshold=args.threshold, hold=args.hold, evidence=args.evidence,
                                timestamps=setup.timestamps)
    return selector, setup.vis_processor.config.image_size


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


@dataclasses.dataclass
class Outcome:
    decisions: int = 0
    changes: int = 0  # mode changes
    frames: int = 0
    seen: float = 0.0  # seconds of stream read
    ended: str = None  # why the run ended early (a signal), else None
    broke: Exception = None  # the StreamBrokeOff (or StreamStalled) that ended the stream, else None
    reader_gone: bool = False  # the pipe the events went to was closed by its reader


def run(selector, frames, out, status=None):
    """Feed ``frames`` ((t, frame) pairs) to ``selector``, writing every event to ``out`` (flushed);
    returns the :class:`Outcome`."""
    outcome = Outcome()
    try:
        for t, frame in frames:
            outcome.seen, outcome.frames = t, outcome.frames + 1
            for event in selector.push(t, frame):
                out.write(json.dumps(event) + "\n")
                out.flush()
                if "event" in event:
                    outcome.changes += 1
                else:
                    outcome.decisions += 1
                    if status:
                        status(event)
    except (_Stop, KeyboardInterrupt) as err:
        outcome.ended = f"stopped by {err if isinstance(err, _Stop) else 'SIGINT'}"
    except frame_stream.StreamBrokeOff as err:  # what was decided before is in the file
        outcome.broke, outcome.seen = err, err.seconds
    except BrokenPipeError:  # the controller reading `--out -` closed its end: a normal way to stop
        outcome.ended, outcome.reader_gone = "stopped: the reader of the events closed the pipe", True
    return outcome


def no_decision_reason(outcome, window_s):
    """Why a run made no decision, in words a user can act on."""
    if not outcome.frames:
        return "no decision: the source gave no frame"
    span = f"{outcome.frames} frame(s) over {outcome.seen:.1f} s"
    if outcome.ended:
        return f"no decision: {outcome.ended} after {span}, before the first {window_s:g} s window ended"
    return (f"no decision: the video holds {span}, less than one {window_s:g} s window "
            "(give a longer video or a shorter --window-s)")


def status_line(event):
    """The live one-line status on a terminal."""
    shown = event["mode"] if event["decided"] else f"{event['mode']}?"
    sys.stderr.write(f"\r[{event['t_end']:8.1f} s] mode {event['current'] or '-':<16} window {shown:<16} "
                     f"p {event['p']:.2f}  {event['latency_ms']:6.1f} ms ")
    sys.stderr.flush()


def positive_seconds(text):
    """argparse type: seconds > 0 (a window, a wait or a limit of 0 would never end or never start)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be seconds > 0, got {text}")
    return value


def exit_stalled(source, out_name):
    """What the frame watchdog does when a read hangs where PyAV cannot interrupt it: say so and exit
    at once (the thread that reads cannot be stopped; every event is already flushed)."""
    def on_hang(seconds):
        sys.stderr.write(f"\nerror: {source}: no frame for {seconds:.1f} s and its reader does not return; "
                         f"the events decided before are in {out_name}\n")
        sys.stderr.flush()
        os._exit(STALLED)
    return on_hang


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama select-mode", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, "evaluation YAML (model.ckpt: the trained run)", trained=True)
    sources = parser.add_mutually_exclusive_group(required=True)
    sources.add_argument("--video", help="a video file")
    sources.add_argument("--stream", help="a stream URL (rtsp://, http://, tcp://, ...) or a V4L2 device (/dev/video0)")
    parser.add_argument("--follow", action="store_true",
                        help="--video is still being written (mkv/ts): wait for more until it stops growing")
    parser.add_argument("--start-timeout-s", type=positive_seconds, default=30.0,
                        help="with --follow: how long the file may take to appear and become readable (default 30)")
    parser.add_argument("--stall-s", type=positive_seconds, default=10.0,
                        help="a live source that sends no frame for this long ends the run (exit 3), or with "
                             "--reconnect is opened again (default 10)")
    parser.add_argument("--reconnect", action="store_true",
                        help="open a live source that drops or stalls again, 0.5 s, 1 s, 2 s, ... (at most 8 s) apart")
    parser.add_argument("--reconnect-max-s", type=positive_seconds, default=60.0,
                        help="with --reconnect: give up when no frame has come for this long (default 60)")
    parser.add_argument("--out", required=True, help="JSONL of decisions and mode changes; - for stdout")
    parser.add_argument("--window-s", type=positive_seconds,
                        help="seconds of video per decision (default: the eval processor's window_s, else 2)")
    parser.add_argument("--stride-s", type=positive_seconds, default=0.5, help="seconds between decisions")
    parser.add_argument("--label-map", help="the `prepare --label-map` file: label (folder) -> mode")
    parser.add_argument("--question", default=GUIDE_QUESTION, help="the question the model was trained with")
    parser.add_argument("--hold", type=int, default=2, help="windows in a row a new mode must win before switching")
    parser.add_argument("--evidence", type=float, help="or the summed probability margin that switches sooner")
    parser.add_argument("--threshold", type=float, help="decide at this probability or more (default: calibrate's)")
    parser.add_argument("--temperature", type=float, help="softmax temperature (default: calibrate's, else 1)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the config's run.device)")
    parser.add_argument("--no-sound", action="store_true",
                        help="a model with the audio branch decides from the frames alone (default: it hears the source)")
    args = parser.parse_args(argv)

    source = args.video or args.stream
    live = frame_stream.is_live(source)
    if args.hold < 1:
        parser.error("--hold must be at least 1")
    if args.follow and live:
        parser.error(f"--follow watches a file being written; {source} is a live stream (drop --follow)")
    if args.reconnect and not live:
        parser.error(f"--reconnect reopens a live stream; {source} is a file (drop --reconnect)")

    if not args.follow:  # a bad source fails before the model loads (a followed file may not be readable yet)
        frame_stream.check_source(source, args.stall_s)
    selector, size = selector_from_args(args)
    reconnect_max_s = args.reconnect_max_s if args.reconnect else 0
    frames = frame_stream.stream_frames(source, size, follow=args.follow, stall_s=args.stall_s,
                                        reconnect_max_s=reconnect_max_s, start_timeout_s=args.start_timeout_s,
                                        on_gap=lambda seconds: selector.restart_window(),  # no window spans a gap
                                        on_sound=selector.sound.add if selector.sound is not None else None)
    to_stdout = args.out == "-"
    out_name = "stdout" if to_stdout else args.out
    if live:  # the stream gives up well before this itself; the watchdog ends a read PyAV cannot interrupt
        frames = frame_stream.watched(frames, 2 * args.stall_s + reconnect_max_s + 5, exit_stalled(source, out_name))
    report = sys.stderr if to_stdout else sys.stdout  # stdout carries only events then
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    started = time.perf_counter()
    try:
        with contextlib.nullcontext(sys.stdout) if to_stdout else open(args.out, "w") as out:
            outcome = run(selector, frames, out, status_line if sys.stderr.isatty() else None)
            if outcome.reader_gone:  # what is left in the buffer, and later flushes, go nowhere: no traceback
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    finally:
        signal.signal(signal.SIGTERM, previous)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if outcome.broke is not None:
        print(f"error: {outcome.broke}; the {outcome.decisions + outcome.changes} event(s) decided before are in "
              f"{out_name}", file=sys.stderr)
        return STALLED if isinstance(outcome.broke, frame_stream.StreamStalled) else 1
    if not outcome.decisions:
        print(no_decision_reason(outcome, selector.settings.window_s), file=report)
        return 0
    print(f"{outcome.decisions} decisions over {outcome.seen:.1f} s of video in "
          f"{time.perf_counter() - started:.1f} s, {outcome.changes} mode change(s), "
          f"mode at the end: {selector.current}"
          f"{f' ({outcome.ended})' if outcome.ended else ''}; events in {out_name}", file=report)
    return 0
