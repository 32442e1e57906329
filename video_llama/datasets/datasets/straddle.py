"""Windows over the cut between two actions, made from two clips on the fly.

A model that chooses a robot's mode watches a stream, and a stream's windows often hold the end of
one action and the start of the next, which clips of one action each never show. A straddling
window is the last seconds of one clip followed by the first seconds of a clip of another answer,
on one time axis, its frames chosen as :func:`~video_llama.processors.video_decoding.window_frames`
chooses a stream window's.

Its answer is the clip holding most of the window's last ``label_span`` share: with 0.5 the new
action wins once it fills a quarter of the window, so a selector switches about as soon as the new
motion can be seen; with 1.0 the window is a majority vote, which is later by half a window. A
third answer (``unknown`` near an even split) was not chosen: it would be a label no user made,
and the selector already abstains when the calibrated probability is low.

A stream also shows a motion that stops, or starts, in one scene, where a cut between two clips
changes the scene as well. With ``stop_ratio`` a share of the samples are windows of one clip in
which the hand holds still from the cut on (or up to it): the frame at the cut repeated, answered
as the data's own class of a hand at rest (``rest_answer``) by the same rule. A model trained on
clips alone learns whether a window holds motion, not whether its last second still does
(docs/streams.md), and a robot should go idle when the hand stops, not two seconds later.

A camera's stream never cuts, yet every straddling window has a cut and a change of answer: a
model can learn to count frames after the jump of scene instead of telling the new motion from the
old. With ``same_answer`` a share of the straddling windows join two clips of one answer (two
scenes, one action), so that a cut by itself says nothing.
"""

from dataclasses import dataclass

import numpy as np

from video_llama.processors.video_decoding import UNKNOWN_FPS, window_frames


@dataclass(frozen=True)
class Straddle:
    """How a dataset makes straddling windows (the dataset YAML's ``straddle_*`` keys)."""

    ratio: float = 0.0  # share of samples that straddle a cut
    label_span: float = 0.5  # the answer is the clip holding most of this last share of the window
    stop_ratio: float = 0.0  # share of samples in which the motion stops or starts
    rest_answer: str = None  # the answer of a hand at rest, for those
    same_answer: float = 0.0  # share of straddling windows whose two clips have one answer

    def __post_init__(self):
        if not 0 <= self.ratio <= 1:
            raise ValueError(f"straddle_ratio must be a share in [0, 1], got {self.ratio!r}")
        if not 0 <= self.stop_ratio <= 1 - self.ratio:
            raise ValueError(f"stop_ratio must be a share in [0, 1 - straddle_ratio], got {self.stop_ratio!r}")
        if self.stop_ratio and not self.rest_answer:
            raise ValueError("stop_ratio answers a window whose motion stops with rest_answer: set it to the "
                             "answer of your class of a hand at rest (e.g. rest)")
        if not 0 <= self.same_answer <= 1:
            raise ValueError(f"straddle_same_answer must be a share in [0, 1], got {self.same_answer!r}")
        if not 0 < self.label_span <= 1:
            raise ValueError(f"straddle_label_span must be a share in (0, 1], got {self.label_span!r}")

    @property
    def active(self):
        return bool(self.ratio or self.stop_ratio)

    def second_wins(self, second_share):
        """Whether the later clip, filling ``second_share`` of the window (its end), gives the answer."""
        return second_share > self.label_span / 2


@dataclass(frozen=True)
class Cut:
    """Which frames of the two clips a straddling window shows."""

    first: list  # frame indices of the earlier clip (its last frames)
    second: list  # frame indices of the later clip (its first frames)
    second_share: float  # share of the window's seconds after the cut
    positions: list  # the sampled frames' places on the window's own frame axis
    fps: float  # that axis's frame rate


def cut_window(window_s, n_frms, first_frames, first_fps, second_frames, second_fps, rng):
    """A :class:`Cut` of a ``window_s`` window over a cut drawn from ``rng`` (``random`` or a
    ``random.Random``) so that each clip shows at least one sampled frame; None when ``n_frms`` is 1
    (one frame cannot straddle)."""
    if n_frms < 2:
        return None
    fps = first_fps or second_fps or UNKNOWN_FPS
    times = np.arange(int(window_s * fps + 1e-6) + 1) / fps
    positions = window_frames(times, times[-1], window_s, n_frms)
    sampled = times[positions]
    if sampled[0] == sampled[-1]:  # a window too short for two distinct frames
        return None
    cut = rng.uniform(np.nextafter(sampled[0], np.inf), sampled[-1])
    before, after = sampled[sampled < cut], sampled[sampled >= cut]
    # the earlier clip ends at the cut: a frame (cut - t) seconds before it; the later one starts there
    first = np.floor(first_frames - (cut - before) * (first_fps or fps)).astype(int)
    second = np.floor((after - cut) * (second_fps or fps)).astype(int)
    return Cut(first=np.clip(first, 0, first_frames - 1).tolist(), second=np.clip(second, 0, second_frames - 1).tolist(),
               second_share=float((times[-1] - cut) / times[-1]), positions=list(positions), fps=fps)


def still_indices(cut, num_frames, stops):
    """The frames of one clip of ``num_frames`` frames for a window over ``cut`` in which the hand
    moves up to the cut and then holds still at the clip's last frame (``stops``), or holds still
    at its first frame and then moves."""
    if stops:
        return cut.first + [num_frames - 1] * len(cut.second)
    return [0] * len(cut.first) + cut.second
