"""What a window's sound costs to read: the whole soundtrack decoded and cut, against a seek to
the window's stretch (``load_soundtrack(path, span)``, what evaluation and select-mode with sound
do for every window), on a long clip written here.

    .venv/bin/python benchmarks/sound_windows.py [--seconds 30] [--window 2.0] [--repeats 5]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def milliseconds(read, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the clip and its AAC soundtrack")
    parser.add_argument("--window", type=float, default=2.0, help="seconds of sound a window hears")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from video_llama.data_tools.video_writer import write_video
    from video_llama.processors.audio import SAMPLE_RATE, load_soundtrack

    rate, fps = 44100, 8
    t = np.arange(int(args.seconds * rate)) / rate
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "long.mp4")
        write_video(path, np.zeros((int(args.seconds * fps), 32, 32, 3), np.uint8), fps=fps,
                    sound=0.4 * np.sin(2 * np.pi * (300 + 40 * t) * t))
        print(f"command: {' '.join(sys.argv)}\nclip: {args.seconds:g} s, AAC at 44.1 kHz; windows of {args.window:g} s; "
              f"median of {args.repeats}\n")
        print("| window ends at s | whole track, cut: ms | seek to the stretch: ms |\n| ---: | ---: | ---: |")
        for end in np.linspace(args.window, args.seconds, 4):
            span = (end - args.window, end)
            whole = milliseconds(lambda: load_soundtrack(path)[int(span[0] * SAMPLE_RATE):int(span[1] * SAMPLE_RATE)],
                                 args.repeats)
            seek = milliseconds(lambda: load_soundtrack(path, span), args.repeats)
            print(f"| {end:.1f} | {whole:.1f} | {seek:.1f} |")


if __name__ == "__main__":
    main()
