"""How a mode selector does on a continuous recording with a ground-truth timeline.

A robot acts on the smoothed mode, so the figures follow it: how often each window's own top mode
is right, how many windows clear the abstention threshold and how often those are right, how
often the smoothed mode is right, how late it switches after a true change, how often it switches
for nothing, and how long a decision takes. The model is run once per recording with
:func:`score_recording`; every smoothing and threshold is then replayed on the same window scores
(:func:`replay`), so they are compared on identical decisions.

A timeline is ``{"segments": [{"start": 0.0, "end": 5.25, "label": "wave", "mode": "greet_mode"},
...], ...}`` (``mode`` optional); :func:`timeline_modes` turns it into ``[(start s, end s, mode)]``
in the selector's modes, which is what the metrics read. Everything but :func:`score_recording` is
plain Python and NumPy over lists of window decisions, so it is tested on hand-made lists.
"""

import collections
import dataclasses

import numpy as np

from video_llama.conversation.answers import normalize_answer
from video_llama.tasks.calibration import decide
from video_llama.tasks.mode_selection import Hysteresis

TOLERANCE_S = 1e-3  # segment boundaries written with fewer decimals still meet
AFTER_CHANGE_BIN_S, AFTER_CHANGE_BINS = 0.5, 5  # the profile of the first 2.5 s after each change


# ---------------------------------------------------------------------------- the timeline


def timeline_modes(timeline, labels, label_map=None):
    """``[(start s, end s, mode)]`` of a timeline (its dict, or its list of segments) in the modes of
    a selector over ``labels`` with ``label_map`` ({label: mode}; a label it does not name is its
    own mode).

    A segment's ``label`` is matched to the model's labels by normalised text ("wipe_glass" is
    "Wipe glass") and takes that label's mode; failing that, its ``mode``, or the mode ``label_map``
    gives its label (a model trained on `prepare --label-map` answers modes, and a timeline written
    by hand names folders), is matched to the selector's modes. Segments are sorted by start and must not
    overlap; time between two segments is unlabeled (see :func:`stream_metrics`).

    Raises:
        ValueError: a segment ends before it starts, segments overlap, or a segment's label (and
            mode) match nothing the model can answer.
    """
    label_map = label_map or {}
    modes = {normalize_answer(label): label_map.get(label, label) for label in labels}
    known_modes = {normalize_answer(mode): mode for mode in modes.values()}
    segments = timeline["segments"] if isinstance(timeline, dict) else timeline
    out = []
    for segment in sorted(segments, key=lambda s: float(s["start"])):
        start, end, label = float(segment["start"]), float(segment["end"]), str(segment["label"])
        if end <= start:
            raise ValueError(f"timeline segment {label!r} ends at {end} s, not after its start {start} s")
        if out and start < out[-1][1] - TOLERANCE_S:
            raise ValueError(f"timeline segment {label!r} starts at {start} s, before the one before ends "
                             f"({out[-1][1]} s): segments must not overlap")
        mapped = next((m for name, m in label_map.items() if normalize_answer(name) == normalize_answer(label)), "")
        mode = (modes.get(normalize_answer(label)) or known_modes.get(normalize_answer(str(segment.get("mode") or "")))
                or known_modes.get(normalize_answer(str(mapped))))
        if mode is None:
            raise ValueError(f"timeline label {label!r} (mode {segment.get('mode') or label!r}) matches none of the "
                             f"model's labels {list(labels)} nor its modes {sorted(set(modes.values()))}")
        out.append((start, end, mode))
    return out


def merge_segments(segments):
    """Consecutive segments of one mode that meet as one segment: for the robot nothing changes there."""
    merged = []
    for start, end, mode in segments:
        if merged and merged[-1][2] == mode and start - merged[-1][1] <= TOLERANCE_S:
            merged[-1] = (merged[-1][0], end, mode)
        else:
            merged.append((start, end, mode))
    return merged


def segment_index(segments, t):
    """The index of the segment holding stream time ``t`` (start <= t < end; the last segment holds
    its end too), or None in a gap between segments.

    Raises:
        ValueError: ``t`` is before the first segment or after the last (not this recording's timeline?).
    """
    if not segments[0][0] <= t <= segments[-1][1]:
        raise ValueError(f"{t} s is outside the timeline ({segments[0][0]} to {segments[-1][1]} s): "
                         "is it the timeline of this recording?")
    last = len(segments) - 1
    return next((i for i, (start, end, _) in enumerate(segments) if start <= t < end or (i == last and t == end)),
                None)


def _spans(segments, start, end):
    """(whether stream times ``start`` to ``end`` lie in one segment, whether they begin in one
    segment and end in a later one): a window beginning before the timeline or in a gap is neither."""
    if start < segments[0][0]:
        return False, False
    first, last = segment_index(segments, start), segment_index(segments, end)
    return first == last, first is not None and first != last


def truth_at(segments, t):
    """The true mode at stream time ``t``, or None in a gap between segments."""
    i = segment_index(segments, t)
    return None if i is None else segments[i][2]


# ---------------------------------------------------------------------------- scoring and replay


def score_recording(selector, frames):
    """The decision events of ``selector`` over ``frames`` ((t s, uint8 frame) pairs), one per window,
    each with ``t_end``, ``mode`` (its top mode), ``p``, ``probs`` and ``latency_ms``. The
    selector's own threshold and smoothing do not matter here (its events' ``decided`` and
    ``current`` are ignored): :func:`replay` redoes both from each window's ``probs``.

    Raises:
        ValueError: the selector has seen frames before (it keeps one stream's frames and clock).
    """
    if selector.next_decision is not None:
        raise ValueError("this selector has already watched a stream: make a new one for each recording")
    return [event for t, frame in frames for event in selector.push(t, frame) if "event" not in event]


def replay(windows, hold=1, evidence=None, threshold=None, unknown="unknown"):
    """(the smoothed mode after each window, the switches [(t_end s, new mode)]) of ``windows``
    under one smoothing (:class:`Hysteresis` ``hold`` and ``evidence``) and abstention ``threshold``
    (None: every window decides; below it a window decides ``unknown``), as a selector with these
    settings would have switched."""
    smoother, modes, switches = Hysteresis(hold, evidence), [], []
    for window in windows:
        choice, _ = decide(list(window["probs"].values()), list(window["probs"]), threshold, unknown)
        if smoother.observe(window["probs"], choice) is not None:
            switches.append((window["t_end"], smoother.current))
        modes.append(smoother.current)
    return modes, switches


def smoothing_name(hold, evidence=None):
    """How a report names a smoothing."""
    if hold == 1:
        return "none (hold 1)"
    return f"hold {hold}" + (f" or margin {evidence:g}" if evidence is not None else "")


# ---------------------------------------------------------------------------- metrics


@dataclasses.dataclass
class StreamTally:
    """What one recording adds to the figures; tallies add up (``+``, ``sum(..., StreamTally())``)
    so that figures pooled over recordings count every window, change and second once."""

    windows: int = 0
    top1_hits: int = 0  # windows whose own top mode is the truth at their end
    inside: int = 0  # windows whose frames all lie in one segment (no change of mode among them)
    inside_hits: int = 0
    # windows that begin in one segment and end in another: how many end in each mode, how many are right
    across: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    across_hits: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    # windows ending soon after a true change: (seconds since it, binned; "new", "old" or "other" mode)
    after_change: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    decided: int = 0  # windows at or above the threshold
    decided_hits: int = 0
    smoothed_hits: int = 0  # windows after which the smoothed mode is the truth
    spurious: int = 0
    seconds: float = 0.0
    changes: int = 0
    delays: list = dataclasses.field(default_factory=list)  # seconds, one per change followed in its segment
    latencies: list = dataclasses.field(default_factory=list)  # ms per window

    def __add__(self, other):
        return StreamTally(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def metrics(self):
        """The figures (see :func:`stream_metrics`); a share of no windows, or a percentile of
        nothing, is None."""
        def share(hits, of):
            return hits / of if of else None

        def percentile(values, q):
            return float(np.percentile(values, q)) if values else None

        return {"windows": self.windows, "window_top1": share(self.top1_hits, self.windows),
                "inside_top1": share(self.inside_hits, self.inside),
                "across_top1": share(sum(self.across_hits.values()), sum(self.across.values())),
                "across_by_mode": {mode: (self.across_hits[mode], n) for mode, n in sorted(self.across.items())},
                "after_change": {since: {kind: self.after_change[since, kind] for kind in ("new", "old", "other")}
                                 for since in sorted({since for since, _ in self.after_change})},
                "coverage": share(self.decided, self.windows),
                "accuracy_on_decided": share(self.decided_hits, self.decided),
                "smoothed_accuracy": share(self.smoothed_hits, self.windows),
                "spurious_per_min": share(self.spurious, self.seconds / 60),
                "delay_median_s": percentile(self.delays, 50), "delay_p95_s": percentile(self.delays, 95),
                "missed": self.changes - len(self.delays), "changes": self.changes,
                "latency_p50_ms": percentile(self.latencies, 50), "latency_p95_ms": percentile(self.latencies, 95)}


def tally_stream(segments, windows, smoothed_modes, switches, latencies_ms=None, threshold=None):
    """The :class:`StreamTally` of one recording (arguments as :func:`stream_metrics`)."""
    if len(smoothed_modes) != len(windows):
        raise ValueError(f"{len(smoothed_modes)} smoothed modes for {len(windows)} windows")
    segments = merge_segments(segments)
    at = [segment_index(segments, w["t_end"]) for w in windows]
    truths = [None if i is None else segments[i][2] for i in at]
    scored = [(w, mode, truth) for w, mode, truth in zip(windows, smoothed_modes, truths) if truth is not None]
    top1 = [w["mode"] == truth for w, _, truth in scored]
    spans = [_spans(segments, w.get("t_start", w["t_end"]), w["t_end"]) for w, _, _ in scored]
    inside, across = [whole for whole, _ in spans], [change for _, change in spans]
    decided = [threshold is None or w["p"] >= threshold for w, _, _ in scored]
    where = [segment_index(segments, t) for t, _ in switches]
    useful, delays, changes = set(), [], 0  # useful: the first switch to each segment's mode within it
    for i, (start, _, mode) in enumerate(segments):
        first = next((k for k, (at, (_, to)) in enumerate(zip(where, switches)) if at == i and to == mode), None)
        if first is not None:
            useful.add(first)
        if i > 0 and mode != segments[i - 1][2]:  # a true change (a segment after a gap may keep the mode)
            changes += 1
            if first is not None:
                delays.append(switches[first][0] - start)
    return StreamTally(
        windows=len(scored), top1_hits=sum(top1), inside=sum(inside), after_change=_after_change(segments, windows, at),
        inside_hits=sum(hit and whole for hit, whole in zip(top1, inside)),
        across=collections.Counter(truth for (_, _, truth), change in zip(scored, across) if change),
        across_hits=collections.Counter(truth for (_, _, truth), change, hit in zip(scored, across, top1) if hit and change),
        decided=sum(decided),
        decided_hits=sum(hit and d for hit, d in zip(top1, decided)),
        smoothed_hits=sum(mode == truth for _, mode, truth in scored),
        spurious=sum(at is not None and k not in useful for k, at in enumerate(where)),
        seconds=sum(end - start for start, end, _ in segments), changes=changes, delays=delays,
        latencies=list(latencies_ms or []))


def _after_change(segments, windows, at):
    """What the windows ending in the first seconds after each true change answer, by time since it
    (``at``: the index of the segment each window ends in, or None)."""
    profile = collections.Counter()
    for w, i in zip(windows, at):
        if not i or segments[i][2] == segments[i - 1][2] or segments[i][0] - segments[i - 1][1] > TOLERANCE_S:
            continue  # the first segment, or one after a gap, begins no change a window can reach back over
        since = int((w["t_end"] - segments[i][0]) // AFTER_CHANGE_BIN_S)
        if since < AFTER_CHANGE_BINS:
            kind = {segments[i][2]: "new", segments[i - 1][2]: "old"}.get(w["mode"], "other")
            profile[since * AFTER_CHANGE_BIN_S, kind] += 1
    return profile


def stream_metrics(segments, windows, smoothed_modes, switches, latencies_ms=None, threshold=None):
    """The stream figures of one recording.

    Args:
        segments: ``[(start s, end s, mode)]``, sorted and not overlapping (:func:`timeline_modes`).
            Consecutive segments of one mode that meet are merged into one: no true change lies
            between them. Time in no segment (a gap) is unlabeled: windows ending there, switches
            made there and its seconds count in no figure; a segment after a gap is a true change
            only when its mode differs from the segment before.
        windows: the window decisions (``t_end``, ``mode``: the window's top mode, ``p``, ``probs``).
        smoothed_modes, switches: :func:`replay`'s, for the same windows.
        latencies_ms: per-window decision latencies, or None.
        threshold: the abstention threshold of the replay (None: every window decided).

    Returns a dict of:
        window_top1: share of windows whose own top mode is the truth at the window's end;
        inside_top1: the same over the windows whose frames (``t_start``, the first frame's time,
            to ``t_end``) all lie in one merged segment, so no change of mode among them; a window
            without ``t_start`` counts by its end: recognition apart from the changes, which a
            window reaching back across one cannot get right at once (see docs/streams.md);
        across_top1, across_by_mode: the same over the windows that begin in one segment and end
            in a later one (they hold a change of mode), and ``{mode: (right, windows)}`` of them by
            the mode at their end: how soon each kind of change (to rest, say) is recognised;
        after_change: ``{seconds: {"new": n, "old": n, "other": n}}``: the windows ending 0-0.5 s,
            0.5-1 s, ... 2-2.5 s after a true change, by whether their own top mode is the new one,
            the one before, or another (a window over a change taken for a third mode is what makes
            a selector switch twice);
        coverage: share of windows with ``p`` at or above the threshold; accuracy_on_decided: the
            window top-1 of those (None when none);
        smoothed_accuracy: share of windows after which the smoothed mode is the truth at the
            window's end (no mode yet, or the abstain label, is wrong);
        spurious_per_min: switches per minute of recording that are not the first switch to the
            mode of the segment they happen in (a switch to the abstain label always is);
        delay_median_s, delay_p95_s: seconds from each true change to the first switch to the new
            mode within its segment (a switch made before the change counts as spurious, not as
            zero delay); None when no change was followed;
        missed: true changes with no such switch; changes: how many true changes there are;
        latency_p50_ms, latency_p95_ms: of ``latencies_ms`` (None without them);
        windows: how many windows were scored (those ending in a gap are not).
    """
    return tally_stream(segments, windows, smoothed_modes, switches, latencies_ms, threshold).metrics()


def tally_replays(segments, windows, holds=(1, 2, 3), threshold=None, evidence=None, unknown="unknown"):
    """``{(decisions, smoothing): StreamTally}`` of one recording's windows replayed under every hold
    of ``holds`` (with ``evidence``), deciding every window and, given a ``threshold``, only windows
    at or above it (the others decide ``unknown``). Latencies are the windows' ``latency_ms`` where
    they have one."""
    latencies = [w["latency_ms"] for w in windows if "latency_ms" in w]
    levels = {"every window": None, **({f"p >= {threshold:.2f}": threshold} if threshold is not None else {})}
    return {(decisions, smoothing_name(hold, evidence)):
            tally_stream(segments, windows, *replay(windows, hold, evidence, level, unknown), latencies, level)
            for decisions, level in levels.items() for hold in holds}


def replay_recordings(make_selector, recordings, frames_of, holds=(1, 2, 3), threshold=None, evidence=None,
                      scored=None):
    """``[{(decisions, smoothing): StreamTally}]``, one per recording of ``recordings`` [(video,
    timeline)]: a fresh selector (``make_selector()``; one holds one stream's frames and clock)
    scores every window of ``frames_of(video)`` once, and :func:`tally_replays` replays each hold
    and the threshold on those scores. A list given as ``scored`` receives each recording's
    (segments in modes, windows)."""
    per_recording = []
    for video, timeline in recordings:
        selector = make_selector()
        segments = timeline_modes(timeline, selector.labels, selector.label_map)
        windows = score_recording(selector, frames_of(video))
        if scored is not None:
            scored.append((segments, windows))
        per_recording.append(tally_replays(segments, windows, holds, threshold, evidence, selector.settings.unknown))
    return per_recording


def pooled(per_recording):
    """``{(decisions, smoothing): StreamTally}`` over all recordings: every window, change and
    second counted once."""
    return {key: sum((tallies[key] for tallies in per_recording), StreamTally()) for key in per_recording[0]}


# ---------------------------------------------------------------------------- the report


COLUMNS = ["model", "decisions", "smoothing", "window top-1", "within one mode", "across a change", "windows decided",
           "accuracy on decided", "smoothed accuracy", "switch delay median / p95 s", "missed changes",
           "spurious switches / min", "decision latency p50 / p95 ms"]


def _number(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def stream_report(rows):
    """A markdown table of ``rows`` ``(model name, decisions, smoothing, metrics)``, one line each."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- | --- | --- |" + " ---: |" * (len(COLUMNS) - 3)]
    for name, decisions, smoothing, m in rows:
        cells = [name, decisions, smoothing, _number(m["window_top1"], 3), _number(m["inside_top1"], 3),
                 _number(m["across_top1"], 3),
                 _number(m["coverage"], 2),
                 _number(m["accuracy_on_decided"], 3), _number(m["smoothed_accuracy"], 3),
                 f"{_number(m['delay_median_s'], 2)} / {_number(m['delay_p95_s'], 2)}",
                 f"{m['missed']} of {m['changes']}", _number(m["spurious_per_min"], 2),
                 f"{_number(m['latency_p50_ms'], 1)} / {_number(m['latency_p95_ms'], 1)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
