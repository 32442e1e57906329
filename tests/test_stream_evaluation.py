"""Stream figures against a timeline: on hand-made window decisions with known delays, spurious
switches, misses and abstentions, and on a selector over frames whose brightness says the class."""

import numpy as np
import pytest

from video_llama.tasks.mode_selection import ModeSelector, SelectorSettings
from video_llama.tasks.stream_evaluation import (
    StreamTally,
    pooled,
    replay,
    replay_recordings,
    score_recording,
    stream_metrics,
    stream_report,
    tally_replays,
    tally_stream,
    timeline_modes,
    truth_at,
)

from test_mode_selection import BrightnessModel, Identity


def windows_of(decisions):
    """Windows from [(t_end, top mode, p)] over the modes "a" and "b"."""
    return [{"t_end": t, "mode": mode, "p": p, "probs": {mode: p, ("b" if mode == "a" else "a"): 1 - p}}
            for t, mode, p in decisions]


def every_second(mode_at, p_at=lambda t: 0.9, seconds=60):
    """Windows ending at 1, 2, ..., ``seconds`` s deciding ``mode_at(t)`` with ``p_at(t)``."""
    return windows_of([(float(t), mode_at(t), p_at(t)) for t in range(1, seconds + 1)])


def metrics_of(segments, windows, hold=1, threshold=None):
    return stream_metrics(segments, windows, *replay(windows, hold, threshold=threshold), threshold=threshold)


def test_truth_at_holds_a_segment_from_its_start_and_the_last_one_to_its_end():
    segments = [(0.0, 10.0, "a"), (10.0, 60.0, "b")]
    assert [truth_at(segments, t) for t in (0.0, 9.99, 10.0, 60.0)] == ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match="outside the timeline"):
        truth_at(segments, 61.0)


def test_a_change_followed_one_second_late_has_a_one_second_delay():
    segments = [(0.0, 10.0, "a"), (10.0, 60.0, "b")]
    windows = every_second(lambda t: "a" if t < 11 else "b")
    modes, switches = replay(windows, hold=1)
    assert switches == [(1.0, "a"), (11.0, "b")]
    m = stream_metrics(segments, windows, modes, switches, latencies_ms=[10.0] * 59 + [30.0])
    assert (m["delay_median_s"], m["delay_p95_s"], m["missed"], m["changes"]) == (1.0, 1.0, 0, 1)
    assert m["spurious_per_min"] == 0.0
    assert m["window_top1"] == m["smoothed_accuracy"] == pytest.approx(59 / 60)  # the window ending at 10 s
    assert (m["latency_p50_ms"], m["coverage"], m["accuracy_on_decided"]) == (10.0, 1.0, pytest.approx(59 / 60))
    assert m["inside_top1"] == m["window_top1"]  # windows without a t_start count by their end

    # 2 s windows: those ending at 10 and 11 s reach back across the change, the one ending at 1 s
    # starts before the timeline; the other 57 lie inside one segment
    spans = [{**w, "t_start": w["t_end"] - 2.0} for w in windows]
    m = stream_metrics(segments, spans, modes, switches)
    assert m["inside_top1"] == 1.0 and m["window_top1"] == pytest.approx(59 / 60)
    inside = tally_stream(segments, spans, modes, switches)
    assert (inside.inside, inside.inside_hits) == (57, 57)
    # the two across the change end in b: the one ending at 10 s still says a, the one at 11 s b
    assert m["across_top1"] == 0.5 and m["across_by_mode"] == {"b": (1, 2)}
    # a gap between two segments (unlabeled time): a window reaching back into it is not inside one
    gapped = [(0.0, 10.0, "a"), (11.0, 60.0, "b")]
    inside = tally_stream(gapped, spans, *replay(spans, hold=1))
    # the window ending at 10 s ends in the gap (not scored); those ending at 11 and 12 s reach back past 11 s
    assert (inside.windows, inside.inside) == (59, 56)
    # hold 2 switches one window later; two recordings pool their delays and changes
    slower = tally_stream(segments, windows, *replay(windows, hold=2))
    pooled = (sum([tally_stream(segments, windows, modes, switches), slower], StreamTally())).metrics()
    assert (pooled["delay_median_s"], pooled["changes"], pooled["windows"]) == (1.5, 2, 120)


def test_one_flip_and_back_is_two_spurious_switches_a_minute_which_smoothing_removes():
    windows = every_second(lambda t: "b" if t == 30 else "a")
    assert metrics_of([(0.0, 60.0, "a")], windows, hold=1)["spurious_per_min"] == 2.0
    smoothed = metrics_of([(0.0, 60.0, "a")], windows, hold=2)
    assert smoothed["spurious_per_min"] == 0.0 and smoothed["smoothed_accuracy"] == pytest.approx(59 / 60)


def test_a_change_never_followed_is_missed_and_a_switch_before_it_is_spurious():
    segments = [(0.0, 30.0, "a"), (30.0, 60.0, "b")]
    never = metrics_of(segments, every_second(lambda t: "a"))
    assert (never["missed"], never["changes"], never["delay_median_s"]) == (1, 1, None)
    early = metrics_of(segments, every_second(lambda t: "a" if t < 29 else "b"))  # switches at 29 s, in "a"
    assert (early["missed"], early["spurious_per_min"]) == (1, 1.0)


def test_abstention_sets_coverage_and_a_switch_to_the_abstain_label_is_spurious():
    unsure = {20, 40}  # two wrong windows, both under the threshold
    windows = every_second(lambda t: "b" if t in unsure else "a", lambda t: 0.55 if t in unsure else 0.9)
    modes, switches = replay(windows, hold=1, threshold=0.6)
    assert switches == [(1.0, "a"), (20.0, "unknown"), (21.0, "a"), (40.0, "unknown"), (41.0, "a")]
    m = stream_metrics([(0.0, 60.0, "a")], windows, modes, switches, threshold=0.6)
    assert (m["coverage"], m["accuracy_on_decided"], m["window_top1"]) == (pytest.approx(58 / 60), 1.0,
                                                                          pytest.approx(58 / 60))
    assert m["spurious_per_min"] == 4.0 and m["smoothed_accuracy"] == pytest.approx(58 / 60)


def test_timeline_labels_map_to_modes_and_segments_of_one_mode_merge():
    labels = ["Wipe glass", "Polish glass", "Wave"]
    label_map = {"Wipe glass": "clean_mode", "Polish glass": "clean_mode", "Wave": "greet_mode"}
    timeline = {"fps": 8.0, "duration": 60.0, "segments": [
        {"start": 0.0, "end": 20.0, "label": "wipe_glass"}, {"start": 20.0, "end": 40.0, "label": "polish_glass"},
        {"start": 40.0, "end": 60.0, "label": "wave", "mode": "greet_mode"}]}
    segments = timeline_modes(timeline, labels, label_map)
    assert segments == [(0.0, 20.0, "clean_mode"), (20.0, 40.0, "clean_mode"), (40.0, 60.0, "greet_mode")]
    windows = [{**w, "mode": {"a": "clean_mode", "b": "greet_mode"}[w["mode"]],
                "probs": {"clean_mode" if k == "a" else "greet_mode": v for k, v in w["probs"].items()}}
               for w in every_second(lambda t: "a" if t < 41 else "b")]
    m = metrics_of(segments, windows)
    assert (m["changes"], m["missed"], m["delay_median_s"], m["spurious_per_min"]) == (1, 0, 1.0, 0.0)
    # a model trained to answer modes: the segment's mode is matched when its label is not
    assert timeline_modes(timeline["segments"][2:], ["greet_mode", "clean_mode"]) == [(40.0, 60.0, "greet_mode")]
    # ... and a timeline written by hand names folders: the user's label map says their modes
    folders = [{"start": 0.0, "end": 5.0, "label": "swipe_vertical"}, {"start": 5.0, "end": 9.0, "label": "orbit"}]
    assert timeline_modes(folders, ["clean_mode", "follow_mode"], {"swipe_vertical": "clean_mode", "orbit": "follow_mode"}) == [
        (0.0, 5.0, "clean_mode"), (5.0, 9.0, "follow_mode")]


def test_time_between_segments_is_left_out_of_every_figure():
    segments = [(0.0, 20.0, "a"), (30.0, 60.0, "b")]
    assert truth_at(segments, 25.0) is None
    windows = every_second(lambda t: "b" if t == 22 or t >= 32 else "a")  # a flicker in the gap, b 2 s late
    m = metrics_of(segments, windows)
    assert (m["windows"], m["changes"], m["delay_median_s"], m["spurious_per_min"]) == (50, 1, 2.0, 0.0)
    assert m["window_top1"] == pytest.approx(48 / 50)  # the windows ending at 30 and 31 s
    assert metrics_of([(0.0, 20.0, "a"), (30.0, 60.0, "a")], windows)["changes"] == 0


def test_a_timeline_label_the_model_cannot_answer_or_an_overlap_is_an_error():
    with pytest.raises(ValueError, match="'jump'.*matches none of the model's labels"):
        timeline_modes([{"start": 0, "end": 5, "label": "wave"}, {"start": 5, "end": 9, "label": "jump"}],
                       ["Wave", "Walk"])
    with pytest.raises(ValueError, match="must not overlap"):
        timeline_modes([{"start": 0, "end": 5, "label": "wave"}, {"start": 4, "end": 9, "label": "walk"}],
                       ["Wave", "Walk"])


def test_scores_of_a_selector_replay_to_the_switches_of_the_timeline():
    labels = ["wave", "wipe", "idle"]  # brightness 0, 0.5, 1
    selector = ModeSelector(BrightnessModel(), labels, "q", Identity(), n_frms=4,
                            settings=SelectorSettings(window_s=1.0, stride_s=0.5, hold=1))
    level = [0] * 30 + [128] * 30 + [0] * 30  # 10 fps: 3 s dark, 3 s mid, 3 s dark
    frames = ((i / 10, np.full((8, 8, 3), v, np.uint8)) for i, v in enumerate(level))
    windows = score_recording(selector, frames)
    assert [w["t_end"] for w in windows] == [1.0 + 0.5 * i for i in range(16)]  # up to the last frame, 8.9 s
    assert all({"mode", "p", "probs", "latency_ms"} <= set(w) for w in windows)
    with pytest.raises(ValueError, match="make a new one for each recording"):
        score_recording(selector, [(0.0, np.zeros((8, 8, 3), np.uint8))])
    segments = [(0.0, 3.0, "wave"), (3.0, 6.0, "wipe"), (6.0, 9.0, "wave")]
    modes, switches = replay(windows, hold=2)
    assert [mode for _, mode in switches] == ["wave", "wipe", "wave"]
    m = stream_metrics(segments, windows, modes, switches)
    assert (m["changes"], m["missed"], m["spurious_per_min"]) == (2, 0, 0.0)
    # the first window mostly past the change ends 0.5-1 s after it, and hold 2 waits one more window
    assert 1.0 <= m["delay_median_s"] <= 1.5
    tallies = tally_replays(segments, windows, holds=(1, 2), threshold=0.9)
    assert list(tallies) == [("every window", "none (hold 1)"), ("every window", "hold 2"),
                             ("p >= 0.90", "none (hold 1)"), ("p >= 0.90", "hold 2")]
    assert tallies[("every window", "hold 2")].metrics() == {**m, "latency_p50_ms": pytest.approx(
        np.median([w["latency_ms"] for w in windows])), "latency_p95_ms": pytest.approx(
        np.percentile([w["latency_ms"] for w in windows], 95))}
    # two recordings, each scored by a fresh selector, pool to twice the windows and changes of one
    timeline = {"segments": [{"start": a, "end": b, "label": mode} for a, b, mode in segments]}
    fresh = lambda: ModeSelector(BrightnessModel(), labels, "q", Identity(), n_frms=4,  # noqa: E731
                                 settings=SelectorSettings(window_s=1.0, stride_s=0.5, hold=1))
    frames_of = lambda _: ((i / 10, np.full((8, 8, 3), v, np.uint8)) for i, v in enumerate(level))  # noqa: E731
    both = pooled(replay_recordings(fresh, [("one", timeline), ("two", timeline)], frames_of, holds=(2,)))
    one = tally_replays(segments, windows, holds=(2,))[("every window", "hold 2")]
    assert (both[("every window", "hold 2")].windows, both[("every window", "hold 2")].changes) == (
        2 * one.windows, 2 * one.changes)
    report = stream_report([("bright", d, s, t.metrics()) for (d, s), t in tallies.items()]).splitlines()
    assert len(report) == 2 + 4 and report[0].startswith("| model | decisions | smoothing | window top-1")
    assert report[3].startswith("| bright | every window | hold 2 | ") and "| 0 of 2 | 0.00 |" in report[3]


def test_windows_after_a_change_are_profiled_by_seconds_since_it_and_what_they_answer():
    # a -> b at 10 s; windows every 0.25 s: "a" up to 10.25 s, a third mode "c" from 10.5 to 11.25 s, then "b"
    segments = [(0.0, 10.0, "a"), (10.0, 20.0, "b")]
    answers = [(q / 4, "a" if q <= 41 else "c" if q <= 45 else "b") for q in range(4, 81)]
    windows = [{"t_end": t, "mode": m, "p": 0.9, "probs": {"a": 0.05, "b": 0.05, "c": 0.05, m: 0.9}}
               for t, m in answers]
    m = stream_metrics(segments, windows, *replay(windows, hold=1))
    assert m["after_change"] == {0.0: {"new": 0, "old": 2, "other": 0}, 0.5: {"new": 0, "old": 0, "other": 2},
                                 1.0: {"new": 0, "old": 0, "other": 2}, 1.5: {"new": 2, "old": 0, "other": 0},
                                 2.0: {"new": 2, "old": 0, "other": 0}}
    assert m["spurious_per_min"] == 3.0  # the switch to "c": one in 20 s
    # no change in a single segment: nothing to profile
    assert stream_metrics([(0.0, 20.0, "a")], windows, *replay(windows, hold=1))["after_change"] == {}


def test_the_smoothing_study_replays_saved_windows_and_its_filters_ignore_one_odd_window(tmp_path, capsys):
    """benchmarks/smoothing_study.py reads what mode_stream.py --save-windows writes; a sticky forward
    filter and a moving average both let one confident odd window pass and follow a lasting change."""
    import json

    from conftest import benchmark

    study = benchmark("smoothing_study")
    windows = every_second(lambda t: "b" if t == 10 or t > 30 else "a", p_at=lambda t: 0.95)
    for modes, switches in (study.forward_filter(windows, switch=0.01, weight=1.0),
                            study.moving_average(windows, keep=0.7, hold=1)):
        assert [to for _, to in switches] == ["a", "b"] and switches[1][0] > 31
        assert modes[9] == "a" and modes[-1] == "b"
    saved = tmp_path / "windows.jsonl"
    saved.write_text(json.dumps({"model": "m", "segments": [[0.0, 30.0, "a"], [30.0, 60.0, "b"]], "windows": windows}))
    study.sys.argv = ["smoothing_study.py", str(saved)]
    study.main()
    out = capsys.readouterr().out
    assert "model m: 1 recordings" in out and "| hold 2 | " in out and "forward filter, switch 0.01, weight 1 |" in out
