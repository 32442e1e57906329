"""Smoothings of the mode selector compared on the same scored windows, without the model.

`select-mode` switches the robot's mode after ``hold`` windows in a row (or a summed probability
margin, ``--evidence``). Would a smoother that weighs each window's confidence do better? This
replays three families on windows saved by ``benchmarks/mode_stream.py --save-windows FILE`` and
prints what the windows answer in the first seconds after each change, then, for each setting,
the figures a roboticist trades against each other: switch delay,
missed changes and spurious switches a minute.

    .venv/bin/python benchmarks/mode_stream.py --models NAME=EVAL_CFG:RUN --video REC.mp4 ... \\
        --label-map modes.yaml --save-windows /tmp/windows.jsonl
    .venv/bin/python benchmarks/smoothing_study.py /tmp/windows.jsonl

- hold N, and hold N or a summed margin (the selector's :class:`Hysteresis`);
- a forward filter (an HMM whose mode stays with probability 1 - ``switch``, the window's
  probabilities raised to ``weight`` as its evidence; windows overlap, so a weight below 1 counts
  each one less): the belief's top mode is the current one;
- an exponential average of the windows' probabilities (``keep`` of the last average), its top
  mode held for N windows.
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from video_llama.tasks.mode_selection import Hysteresis  # noqa: E402
from video_llama.tasks.stream_evaluation import StreamTally, replay, tally_stream  # noqa: E402


def top_mode_held(scores, modes, hold):
    """(modes after each window, switches) when the top of ``scores`` ((t_end, array) per window)
    goes through the selector's :class:`Hysteresis` of ``hold`` windows."""
    smoother, out, switches = Hysteresis(hold), [], []
    for t_end, score in scores:
        if smoother.update(modes[int(np.argmax(score))]) is not None:
            switches.append((t_end, smoother.current))
        out.append(smoother.current)
    return out, switches


def forward_filter(windows, switch, weight):
    modes = list(windows[0]["probs"])
    belief, scores = np.full(len(modes), 1 / len(modes)), []
    for w in windows:
        stay = (1 - switch) * belief + switch * (1 - belief) / (len(modes) - 1)
        belief = stay * (np.array([w["probs"][m] for m in modes]) + 1e-6) ** weight
        belief /= belief.sum()
        scores.append((w["t_end"], belief))
    return top_mode_held(scores, modes, 1)


def moving_average(windows, keep, hold):
    modes, average, scores = list(windows[0]["probs"]), None, []
    for w in windows:
        probs = np.array([w["probs"][m] for m in modes])
        average = probs if average is None else keep * average + (1 - keep) * probs
        scores.append((w["t_end"], average))
    return top_mode_held(scores, modes, hold)


SMOOTHERS = {
    **{f"hold {h}": (lambda w, h=h: replay(w, h)) for h in (1, 2, 3)},
    **{f"hold {h} or margin {e:g}": (lambda w, h=h, e=e: replay(w, h, e)) for h, e in itertools.product((2, 3), (0.6, 0.8, 1.5))},
    **{f"forward filter, switch {s:g}, weight {k:g}": (lambda w, s=s, k=k: forward_filter(w, s, k))
       for s, k in itertools.product((0.01, 0.03, 0.1, 0.2), (0.5, 1.0, 2.0))},
    **{f"average keeping {k:g}, hold {h}": (lambda w, k=k, h=h: moving_average(w, k, h))
       for k, h in itertools.product((0.3, 0.5, 0.7), (1, 2))},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("windows", help="the JSON lines of mode_stream.py --save-windows")
    args = parser.parse_args()
    recordings = [json.loads(line) for line in Path(args.windows).read_text().splitlines()]
    for model in dict.fromkeys(r["model"] for r in recordings):
        mine = [r for r in recordings if r["model"] == model]
        print(f"\nmodel {model}: {len(mine)} recordings")
        plain = sum((tally_stream([tuple(s) for s in r["segments"]], r["windows"], *replay(r["windows"]))
                     for r in mine), StreamTally()).metrics()
        print(f"window top-1 {plain['window_top1']:.3f}, within one mode {plain['inside_top1']:.3f}; windows ending "
              "after a change, their top mode the new / the old / another: "
              + ", ".join(f"{since:g}-{since + 0.5:g} s {c['new']} / {c['old']} / {c['other']}"
                          for since, c in plain["after_change"].items()) + "\n")
        print("| smoothing | smoothed accuracy | switch delay median / p95 s | missed changes | spurious switches / min |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, smooth in SMOOTHERS.items():
            tally = StreamTally()
            for r in mine:
                segments = [tuple(s) for s in r["segments"]]
                tally += tally_stream(segments, r["windows"], *smooth(r["windows"]))
            m = tally.metrics()
            delay = "n/a" if m["delay_median_s"] is None else f"{m['delay_median_s']:.2f} / {m['delay_p95_s']:.2f}"
            print(f"| {name} | {m['smoothed_accuracy']:.3f} | {delay} | {m['missed']} of {m['changes']} "
                  f"| {m['spurious_per_min']:.2f} |")


if __name__ == "__main__":
    main()
