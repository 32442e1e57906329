"""From what a camera sees to a robot's low-level mode.

A robot does not watch one pre-cut clip: it watches a stream, must act only when it is sure, must
not flicker between modes, and must say when the scene is none of them. :class:`ModeSelector`
slides a window of ``n_frms`` frames over timestamped frames, scores every label with the model
(``score``: the log-likelihood of each label as the answer), turns the scores into calibrated
probabilities (the run's temperature), sums them per mode (a label map may send several labels
to one mode), abstains below the threshold (``unknown``), and smooths the decisions with
:class:`Hysteresis`, so that one odd window never switches the mode. A model with the audio branch
also hears each window (its stretch of the source's sound, a ``SoundBuffer``); a window without
sound is decided from its frames.
"""

import dataclasses
import logging
import time
from collections import deque

import numpy as np
import torch

from video_llama.conversation.templates import timestamp_sentence
from video_llama.processors.video_decoding import window_frames
from video_llama.tasks.calibration import decide, probabilities

logger = logging.getLogger(__name__)


class Hysteresis:
    """The current mode changes only when the evidence for another one holds: ``hold`` windows in a
    row decide for it, or (``evidence``) its probability margins over the current mode, summed over
    such a run of windows, reach that total. A window that decides for the current mode ends the
    run. ``hold=1`` follows every window (no smoothing)."""

    def __init__(self, hold=2, evidence=None):
        if hold < 1:
            raise ValueError(f"hold must be at least 1 window, got {hold}")
        self.hold, self.evidence = hold, evidence
        self.current, self.candidate, self.run, self.margin = None, None, 0, 0.0

    def update(self, mode, margin=0.0):
        """Feed one window's decided mode (and how much more probable it is than the current one);
        returns the new current mode when it changes, else None."""
        if mode == self.current:
            self.candidate, self.run, self.margin = None, 0, 0.0
            return None
        if mode != self.candidate:
            self.candidate, self.run, self.margin = mode, 0, 0.0
        self.run, self.margin = self.run + 1, self.margin + margin
        if self.run >= self.hold or (self.evidence is not None and self.margin >= self.evidence):
            self.current, self.candidate, self.run, self.margin = mode, None, 0, 0.0
            return mode
        return None

    def observe(self, probs, decision):
        """:meth:`update` with one window's {mode: probability} and its decision (a mode, or the
        abstain label, whose margin counts as 0)."""
        margin = probs[decision] - probs.get(self.current, 0.0) if decision in probs else 0.0
        return self.update(decision, margin)


@dataclasses.dataclass
class SelectorSettings:
    window_s: float = 2.0  # seconds of video a decision looks at
    stride_s: float = 0.5  # seconds between decisions
    temperature: float = 1.0  # softmax temperature of the label scores (`video-llama calibrate`)
    threshold: float = None  # decide only at this probability or more; None: always decide
    unknown: str = "unknown"  # the decision below the threshold
    hold: int = 2  # windows in a row a new mode must win before the mode switches
    evidence: float = None  # or: summed probability margin that switches sooner; None: hold only
    timestamps: bool = False  # put the frame-times sentence before the question (as the model was trained)
    length_norm: bool = False  # score labels by mean log-probability per token (run.length_norm)

    def __post_init__(self):
        if not self.window_s > 0 or not self.stride_s > 0:
            raise ValueError(f"window and stride must be positive seconds, got {self.window_s} and {self.stride_s}")


class ModeSelector:
    """Feed frames with :meth:`push`; get events (JSON-ready dicts) back as decisions are made.

    Args:
        model: a VideoLLAMA (its ``score``) on its device.
        labels: the answers the model was trained to give, in any order.
        question: what the model is asked about each window (the training question).
        plan: the PixelPlan that turns uint8 frames into model input (the eval processor's).
        n_frms: frames per window, spread evenly over it.
        label_map: {label: mode}; labels it does not name are their own mode.
        settings: a :class:`SelectorSettings`.
        sound: a ``processors.audio.SoundBuffer`` the source's sound is fed into, for a model with
            the audio branch; None: the frames alone.
    """

    def __init__(self, model, labels, question, plan, n_frms=8, label_map=None, settings=None, sound=None):
        self.model, self.labels, self.question, self.plan, self.n_frms = model, list(labels), question, plan, n_frms
        self.settings = settings or SelectorSettings()
        self.mode_of = [(label_map or {}).get(label, label) for label in self.labels]
        self.label_map = dict(zip(self.labels, self.mode_of))  # {label: mode}
        self.modes = list(dict.fromkeys(self.mode_of))
        self.smoother = Hysteresis(self.settings.hold, self.settings.evidence)
        self.frames = deque()  # (t, uint8 (H, W, 3)) of the last window_s seconds
        self.next_decision = None  # the stream time of the next decision
        self.sound, self.heard = sound, None  # whether the last window was heard (said when it changes)

    @property
    def current(self):
        return self.smoother.current

    def restart_window(self):
        """Forget the frames so far: after a gap in the stream (a reconnect) no decision mixes frames
        from both sides of it; the next one comes a whole window after it."""
        self.frames.clear()
        self.next_decision = None

    def push(self, t, frame):
        """One frame at stream time ``t`` (seconds); returns the events it completes."""
        arrived = time.perf_counter()
        settings = self.settings
        if self.frames and t - self.frames[-1][0] > settings.window_s:  # a gap no window can span
            self.restart_window()
        self.frames.append((t, frame))
        while self.frames and self.frames[0][0] < t - settings.window_s - 1e-6:
            self.frames.popleft()
        if self.next_decision is None:
            self.next_decision = self.frames[0][0] + settings.window_s
        if t + 1e-6 < self.next_decision:
            return []
        while self.next_decision <= t + 1e-6:  # a slow stream (few fps) may pass several decision times at once
            self.next_decision += settings.stride_s
        return self.decide(t, arrived)

    def window(self, t_end):
        """(frame times, uint8 (C, T, H, W)) of ``n_frms`` of the window's frames, chosen by
        ``window_frames``, as a processor with ``window_s`` chooses a training window's."""
        times = np.array([ft for ft, _ in self.frames])
        chosen = window_frames(times, t_end, self.settings.window_s, self.n_frms)
        clip = torch.from_numpy(np.stack([self.frames[i][1] for i in chosen])).permute(3, 0, 1, 2)
        return times[chosen], clip

    def window_sound(self, t_end):
        """The filterbanks of the window's sound, or None (no sound buffer, or no sound there); a
        change between heard and unheard windows is logged."""
        if self.sound is None:
            return None
        sound = self.sound.clips(t_end - self.settings.window_s, t_end)
        if (sound is not None) != self.heard:
            self.heard = sound is not None
            logger.warning("%.1f s: %s", t_end, "hearing the sound" if self.heard else
                           "no sound in this window: deciding from the frames alone")
        return sound

    def mode_probabilities(self, clip, times, sound=None):
        """{mode: probability} of one uint8 clip (and its sound's filterbanks)."""
        note = timestamp_sentence(list(times - times[0]), 1.0) if self.settings.timestamps else ""
        frames = self.plan.apply(clip.contiguous()).unsqueeze(0).to(self.model.device)
        # sound= only with sound: a model without the audio branch (a plugin's) need not take it
        heard = {"sound": sound.unsqueeze(0).to(self.model.device)} if sound is not None else {}
        with torch.no_grad():
            scores = self.model.score(frames, [note + self.question], self.labels,
                                      length_normalize=self.settings.length_norm, **heard)[0]
        probs = probabilities(scores.numpy(), self.settings.temperature)
        per_mode = dict.fromkeys(self.modes, 0.0)
        for mode, p in zip(self.mode_of, probs):
            per_mode[mode] += float(p)
        return per_mode

    def decide(self, t_end, arrived=None):
        """Score the window ending at ``t_end``; returns its decision event and, when the mode
        changes, a mode-change event."""
        arrived = arrived or time.perf_counter()
        settings = self.settings
        times, clip = self.window(t_end)
        sound = self.window_sound(t_end)
        per_mode = self.mode_probabilities(clip, times, sound)
        mode = max(per_mode, key=per_mode.get)
        choice, p = decide(list(per_mode.values()), list(per_mode), settings.threshold, settings.unknown)
        decided = choice == mode
        before = self.current
        changed = self.smoother.observe(per_mode, choice)
        event = {"t_start": round(float(times[0]), 3), "t_end": round(float(t_end), 3), "mode": mode,
                 "p": round(p, 4), "decided": decided, "current": self.current,
                 "latency_ms": round((time.perf_counter() - arrived) * 1000, 1),
                 "probs": {m: round(v, 4) for m, v in per_mode.items()}}
        if self.sound is not None:
            event["sound"] = sound is not None
        events = [event]
        if changed is not None:
            events.append({"event": "mode_change", "t": round(float(t_end), 3), "from": before, "to": changed})
        return events


def label_modes(labels, names_to_modes):
    """{label: mode} for a model's ``labels`` from a map of folder names or labels to modes (the
    ``prepare --label-map`` file: a label written from a folder name, "Wipe glass" from
    ``wipe_glass``, takes that folder's mode); a label the map does not name is its own mode."""
    from video_llama.conversation.answers import normalize_answer

    by_name = {normalize_answer(name): mode for name, mode in (names_to_modes or {}).items()}
    return {label: by_name.get(normalize_answer(label), label) for label in labels}


def selector_for_run(model, vis_processor, run_cfg, question, label_map=None, sound=None, **overrides):
    """A :class:`ModeSelector` for a trained run, set up as it was trained and calibrated: its labels
    (``run.labels``, else the run's ``labels.json``), its temperature and threshold (``calibrate``'s,
    unless ``run.temperature`` / ``run.decision_threshold``), the processor's window (``window_s``,
    else 2 s) and frame count; ``label_map`` as :func:`label_modes` takes it; ``sound`` as
    :class:`ModeSelector` takes it. ``overrides`` replace :class:`SelectorSettings` fields (a None value
    keeps the run's: ``threshold=None`` decides at the calibrated threshold).

    Raises:
        UserError: the labels to score cannot be found.
    """
    from video_llama.common.errors import UserError
    from video_llama.tasks.action_recognition import trained_labels
    from video_llama.tasks.calibration import decision_settings

    ckpt = model.cfg.get("ckpt")
    labels = list(run_cfg.get("labels") or trained_labels(ckpt) or [])
    if not labels:
        raise UserError(f"which labels to score is unknown: model.ckpt={ckpt!r} is not a run of ours with a labels.json "
                        "beside its training annotations; set run.labels=[label1,label2,...]")
    temperature, threshold, unknown = decision_settings(run_cfg, ckpt)
    config = vis_processor.config
    run_settings = {"window_s": getattr(config, "window_s", 0) or 2.0, "temperature": temperature,
                    "threshold": threshold, "unknown": unknown, "length_norm": bool(run_cfg.get("length_norm"))}
    given = {key: value for key, value in overrides.items() if value is not None}
    settings = SelectorSettings(**{**run_settings, **given})
    return ModeSelector(model, labels, question, vis_processor.plan(None), config.n_frms,
                        label_modes(labels, label_map), settings, sound)
