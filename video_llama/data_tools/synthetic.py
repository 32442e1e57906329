"""Synthetic action data as real encoded videos: two sets of classes, and continuous recordings.

*Motion classes* (``MOTIONS``, ``write_synthetic_dataset``, ``video-llama synth --out DIR``) differ only
in motion. *Context classes* (``CONTEXT_CLASSES``, ``write_context_dataset``, ``synth --out DIR
--context``) are the guide's example: the same motion means different robot modes by where it
happens. *Recordings* (``write_recording``, ``synth --stream REC.mp4``) string context actions
together in one scene, with a ground-truth timeline to score windows cut anywhere against.

Motion classes. Each clip shows one shape on a noisy background. Colour, shape, size, speed, start
position, background, noise, length and container (MP4/AVI) are drawn at random for every clip and
are the same for every class, so that neither one frame nor the clip's mean colour tells the classes
apart (``benchmarks/synthetic_controls.py`` measures both): a model has to follow the shape over
time. Written as real encoded video files in the layout ``prepare`` reads:
``OUT/<class>/<class>_<n>.<ext>``.

Where the shape is in any one frame must not give the class away either. If every path had to fit
inside the frame it would (a crossing shape is near the middle at mid-clip, a falling one is never
low early on: a classifier on the middle frame scored 0.38 on such clips). So each path is centred
on a uniformly random spot of the frame and is free to leave it, as a person walks out of shot.
Centring on the path's average position rather than on its mid-clip position keeps how often the
shape is out of view about the same for every class (a circling shape centred mid-clip left the
frame in about a quarter of the frames, a falling one almost never), so the clip's mean colour does not
tell the classes apart either. ``wrap=True`` goes further: the scene wraps around at its edges (a
shape leaving on the right comes back on the left, as in old arcade games) and every path starts
anywhere, so every frame of every class shows the shape equally likely anywhere. That is the
strictest test of motion and a much harder one (the README has the numbers).

Context classes. A hand moving to and fro is ``wave`` (greet_mode) in open space and ``wipe_glass``
(clean_mode) over a glass pane; circling is ``circle`` (follow_mode) in open space and ``polish_glass``
(clean_mode) over a pane; a hand at rest is ``rest`` (idle_mode) in either place. Half the open-space
clips show a pane too, away from the hand, so a visible pane alone does not give the class away: what
counts is whether the motion is *over* it. Motions are defined per second, not per clip, so any 2 s of
a clip or a recording look like any other 2 s of the same action. ``OUT/modes.yaml`` maps each class
folder to its mode for ``prepare --label-map``.

Recordings. One fixed camera: background, noise, hand and pane stay for the whole video; the hand
glides to where each action happens and performs it with the very motions of the clips. The
timeline ``REC.timeline.json`` says which class (and mode) holds from when to when, in seconds.
"""

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from video_llama.data_tools.video_writer import write_video
from video_llama.common.errors import UserError

FRAME_SIZE = 96


# Each motion is a path of offsets (in frame widths) spanning the whole clip. Speeds are per clip,
# not per frame, so the 8 evenly spaced frames a model samples show every motion without aliasing.


def _to_and_fro(t, n, rng):  # a hand waving: 2-2.75 horizontal cycles per clip, no net displacement
    cycles, phase, amp = rng.uniform(2.0, 2.75), rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.3)
    return amp * np.sin(2 * math.pi * cycles * t / n + phase), np.zeros_like(t)


def _circling(t, n, rng):  # wiping a glass door: about one turn per clip, either direction
    turns, phase, radius = rng.uniform(0.9, 1.5), rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.28)
    angle = rng.choice([-1, 1]) * 2 * math.pi * turns * t / n + phase
    return radius * np.cos(angle), radius * np.sin(angle)


def _falling(t, n, rng):  # falling down: accelerating downwards
    return np.zeros_like(t), rng.uniform(0.35, 0.55) * (t / n) ** 2


def _crossing(t, n, rng):  # walking across: constant speed, either direction
    return rng.choice([-1, 1]) * rng.uniform(0.35, 0.55) * t / n, np.zeros_like(t)


def _bouncing(t, n, rng):  # jumping: vertical hops, 2-3 per clip
    hops, phase, amp = rng.uniform(2.0, 3.0), rng.uniform(0, math.pi), rng.uniform(0.2, 0.3)
    return np.zeros_like(t), -amp * np.abs(np.sin(math.pi * hops * t / n + phase))


def _still(t, n, rng):  # standing: small jitter around one place
    return rng.normal(0, 0.004, t.shape), rng.normal(0, 0.004, t.shape)


def place_in_view(xs, ys, margin, rng):
    """Translate a path so that its average position is a uniformly random spot ``margin`` inside
    the frame; on the way the shape may leave the frame."""
    return [v - v.mean() + rng.uniform(margin, 1 - margin) for v in (xs, ys)]


def scene_position(xs, ys, rng):
    """The path moved to a uniformly random start on the wrapped scene (coordinates in [0, 1))."""
    return (xs + rng.uniform()) % 1.0, (ys + rng.uniform()) % 1.0


def wrapped_offset(offset, size):
    """A signed pixel offset taken the short way round a scene that wraps every ``size`` pixels."""
    return (offset + size / 2) % size - size / 2


MOTIONS = {
    "to_and_fro": _to_and_fro,
    "circling": _circling,
    "falling_down": _falling,
    "crossing": _crossing,
    "bouncing": _bouncing,
    "standing_still": _still,
}


def render_clip(motion, rng, num_frames=None, size=FRAME_SIZE, wrap=False):
    """uint8 frames (T, size, size, 3) of one clip of ``motion``, on a wrapped scene if ``wrap``."""
    num_frames = num_frames or int(rng.integers(16, 41))
    t = np.arange(num_frames, dtype=np.float64)
    radius = rng.uniform(0.09, 0.15) * size
    path = MOTIONS[motion](t, num_frames, rng)
    xs, ys = scene_position(*path, rng) if wrap else place_in_view(*path, margin=radius / size, rng=rng)
    background = rng.integers(0, 111, size=3)  # a darker scene ...
    colour = background + rng.integers(90, 256 - background)  # ... and a lighter shape, in every channel
    round_shape = rng.random() < 0.5
    noise = rng.uniform(2, 10)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for i in range(num_frames):
        dx, dy = xx - xs[i] * size, yy - ys[i] * size
        if wrap:
            dx, dy = wrapped_offset(dx, size), wrapped_offset(dy, size)
        mask = (dx**2 + dy**2 <= radius**2) if round_shape else (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
        frame = np.broadcast_to(background, (size, size, 3)).astype(np.float64)
        frame[mask] = colour
        frame += rng.normal(0, noise, frame.shape)
        frames[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def write_synthetic_dataset(out_dir, classes=4, per_class=40, seed=0, fps=8, wrap=False):
    """Write ``per_class`` clips for each of the first ``classes`` motions. Returns the class names."""
    if not 2 <= classes <= len(MOTIONS):
        raise UserError(f"--classes must be between 2 and {len(MOTIONS)}")
    names = list(MOTIONS)[:classes]
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    for name in names:
        for n in range(per_class):
            ext = ".mp4" if n % 2 == 0 else ".avi"
            write_video(out_dir / name / f"{name}_{n:03d}{ext}", render_clip(name, rng, wrap=wrap), fps=fps)
    return names


# Context classes: the same motion means something else over a glass pane than in open space.

PANE, OPEN, EITHER = "pane", "open", "either"  # where the hand acts
EDGE, INSET, GAP = 0.04, 0.03, 0.03  # frame widths: path from the frame's edge, from a pane's edge it is over,
# and the hand's rim from a pane it is not over

# Context motions: offsets (frame widths) about 0 at times ``t`` in seconds. Rates are per second, so
# that any stretch of a clip or recording looks like any other of the same action, and stay at most
# 1.8 Hz: 8 frames sampled over 2 s (4 a second) see every to-and-fro below their 2 Hz limit, if only
# just (a third to a half of a cycle between sampled frames; the stream recipe samples 16, a sixth to a
# quarter), and circling is slow (a tenth of a turn): at 0.6-1 Hz against 0.35-0.6 turns a second the
# two looked alike in 8 frames and the stream recipe confused them (docs/streams.md).


def _wave(t, rng):  # to and fro: 1.2-1.8 Hz, horizontal
    hz, phase, amp = rng.uniform(1.2, 1.8), rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.19)
    return amp * np.sin(2 * math.pi * hz * t + phase), np.zeros_like(t)


def _circle(t, rng):  # circling: 0.25-0.45 turns a second, either way round
    turns, phase, radius = rng.uniform(0.25, 0.45), rng.uniform(0, 2 * math.pi), rng.uniform(0.12, 0.16)
    angle = rng.choice([-1, 1]) * 2 * math.pi * turns * t + phase
    return radius * np.cos(angle), radius * np.sin(angle)


def _rest(t, rng):  # at rest: a slow sway of a pixel or so, and a tremor
    hz, phase = rng.uniform(0.05, 0.2, (2, 1)), rng.uniform(0, 2 * math.pi, (2, 1))  # x and y
    sway = rng.uniform(0.005, 0.015, (2, 1)) * np.sin(2 * math.pi * hz * t + phase)
    return tuple(sway + rng.normal(0, 0.002, sway.shape))


CONTEXT_ACTIONS = {  # class folder: (motion, where the hand does it, robot mode)
    "wave": (_wave, OPEN, "greet_mode"),
    "wipe_glass": (_wave, PANE, "clean_mode"),
    "circle": (_circle, OPEN, "follow_mode"),
    "polish_glass": (_circle, PANE, "clean_mode"),
    "rest": (_rest, EITHER, "idle_mode"),
}
CONTEXT_CLASSES = {name: mode for name, (_, _, mode) in CONTEXT_ACTIONS.items()}
CONTEXT_LABEL_MAP = "modes.yaml"  # written beside the class folders: ``prepare --label-map OUT/modes.yaml``


@dataclass(frozen=True)
class Scene:
    """What a fixed camera sees the same all along: the backdrop (background and pane, no hand),
    the hand's look and the sensor noise. Lengths and the pane (x0, y0, x1, y1) are in frame widths."""

    backdrop: np.ndarray  # (size, size, 3) float32
    background: np.ndarray
    hand_colour: np.ndarray
    hand_radius: float
    round_hand: bool
    noise: float
    pane: tuple = None


def random_scene(rng, size=FRAME_SIZE):
    """A random look without a pane. The hand is lighter than the background, as in ``render_clip``."""
    background = rng.integers(0, 111, size=3)
    hand = background + rng.integers(90, 256 - background)
    backdrop = np.broadcast_to(background, (size, size, 3)).astype(np.float32)
    return Scene(backdrop, background, hand.astype(np.float32), rng.uniform(0.05, 0.07), rng.random() < 0.5,
                 rng.uniform(2, 10))


def with_pane(scene, pane, rng):
    """The scene with a glass pane at ``pane``: tinted glass between the background and the hand in
    brightness (so the hand stays visible over it), a neutral frame a little lighter, and one or two
    diagonal glare streaks."""
    size = len(scene.backdrop)
    x0, y0, x1, y1 = (np.asarray(pane) * size).round().astype(int)
    glass = scene.background + (scene.hand_colour - scene.background) * rng.uniform(0.3, 0.6) * rng.uniform(0.6, 1, 3)
    region = np.empty((y1 - y0, x1 - x0, 3), np.float32)
    region[:] = glass
    yy, xx = np.mgrid[0 : y1 - y0, 0 : x1 - x0]
    for _ in range(rng.integers(1, 3)):
        angle = rng.uniform(0.5, 1.1) * rng.choice([-1, 1])  # radians from vertical
        across = (xx - rng.uniform(0, x1 - x0)) * math.cos(angle) - (yy - rng.uniform(0, y1 - y0)) * math.sin(angle)
        streak = np.abs(across) < rng.uniform(1, 3)
        region[streak] += (255 - region[streak]) * rng.uniform(0.3, 0.5)
    border = rng.integers(1, 3)
    edge = (yy < border) | (yy >= y1 - y0 - border) | (xx < border) | (xx >= x1 - x0 - border)
    region[edge] = min(255, glass.max() + rng.uniform(25, 50))
    backdrop = scene.backdrop.copy()
    backdrop[y0:y1, x0:x1] = region
    return replace(scene, backdrop=backdrop, pane=tuple(pane))


def place_path(dx, dy, where, scene, rng, tries=500):
    """The path (offsets) moved to a random spot where the action happens: ``PANE``, over the pane,
    or ``OPEN``, inside the frame with the hand clear of any pane. None if no spot was found."""
    box = np.add(scene.pane, [INSET, INSET, -INSET, -INSET]) if where == PANE else (EDGE, EDGE, 1 - EDGE, 1 - EDGE)
    low, high = np.subtract(box[:2], [dx.min(), dy.min()]), np.subtract(box[2:], [dx.max(), dy.max()])
    if (low > high).any():
        return None
    for _ in range(tries):
        cx, cy = rng.uniform(low, high)
        if where == PANE or scene.pane is None or _clear_of_pane(dx + cx, dy + cy, scene):
            return dx + cx, dy + cy
    return None


def _clear_of_pane(xs, ys, scene):
    reach = scene.hand_radius + GAP
    x0, y0, x1, y1 = scene.pane
    return xs.max() + reach < x0 or xs.min() - reach > x1 or ys.max() + reach < y0 or ys.min() - reach > y1


def render_hand(scene, xs, ys, rng):
    """uint8 frames (T, size, size, 3): the hand at (xs, ys) over the scene's backdrop, plus noise.
    All frames are drawn at once (4x faster than frame by frame)."""
    size = len(scene.backdrop)
    grid = np.arange(size, dtype=np.float32)
    dx = grid[None, None, :] - (np.asarray(xs, np.float32) * size)[:, None, None]
    dy = grid[None, :, None] - (np.asarray(ys, np.float32) * size)[:, None, None]
    radius = scene.hand_radius * size
    hand = (dx**2 + dy**2 <= radius**2) if scene.round_hand else (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    frames = np.empty(hand.shape + (3,), np.float32)
    frames[:] = scene.backdrop
    frames[hand] = scene.hand_colour
    frames += sensor_noise(frames.shape, scene.noise, rng)
    return np.clip(frames, 0, 255, out=frames).astype(np.uint8)


def sensor_noise(shape, std, rng):
    """float32 zero-mean noise of standard deviation ``std``: the difference of two uniform random
    bytes (a triangular distribution), which looks like Gaussian noise at these levels and costs a
    third as much or less (4 vs 11-22 ms for a clip's million values)."""
    count = math.prod(shape)
    noise = np.frombuffer(rng.bytes(count), np.uint8).astype(np.float32)
    noise -= np.frombuffer(rng.bytes(count), np.uint8)
    noise *= std / math.sqrt((256**2 - 1) / 6)  # the difference's standard deviation
    return noise.reshape(shape)


class Action(NamedTuple):
    frames: np.ndarray  # uint8 (T, size, size, 3)
    path: np.ndarray  # (T, 2) the hand's centre (x, y) in frame widths
    scene: Scene


def render_action(label, rng, seconds=None, fps=8, size=FRAME_SIZE):
    """One clip of a context class (3-6 s unless ``seconds``). ``wave``/``circle`` happen in open
    space with, in half the clips, a pane elsewhere in view, so that a visible pane alone does not
    give the class away; ``rest`` is over a pane in half the clips."""
    motion, where, _ = CONTEXT_ACTIONS[label]
    seconds = seconds or rng.uniform(3, 6)
    dx, dy = motion(np.arange(round(seconds * fps)) / fps, rng)
    scene = random_scene(rng, size)
    if where == EITHER:
        where = PANE if rng.random() < 0.5 else OPEN
    glass_in_view = where == PANE or rng.random() < 0.5
    placed = pane = None
    while placed is None:  # no room for the path over this pane, or beside it: try another
        if where == OPEN and glass_in_view:  # the path first, then a pane beside it
            placed = place_path(dx, dy, OPEN, scene, rng)
            pane = pane_beside(*placed, scene.hand_radius + GAP, rng)
            placed = placed if pane is not None else None
        else:
            pane = random_pane(rng) if glass_in_view else None
            placed = place_path(dx, dy, where, replace(scene, pane=pane), rng, tries=50)
    framed = with_pane(scene, pane, rng) if pane is not None else scene
    xs, ys = placed
    return Action(render_hand(framed, xs, ys, rng), np.stack([xs, ys], axis=1), framed)


PANE_SIDES = (0.5, 0.8)  # a pane's width and height, in frame widths, whatever the hand does there


def random_pane(rng):
    """A pane inside the frame, its size drawn from ``PANE_SIDES`` for every class alike: a pane
    sized around the hand's sweep would show the motion in any one frame (a wide, flat pane for
    to-and-fro, a square one for circling), so the model could name the class without watching."""
    w, h = rng.uniform(*PANE_SIDES, 2)
    x0, y0 = rng.uniform(EDGE, 1 - EDGE - w), rng.uniform(EDGE, 1 - EDGE - h)
    return x0, y0, x0 + w, y0 + h


def pane_beside(xs, ys, reach, rng, tries=20):
    """A pane of ``PANE_SIDES`` that stays ``reach`` clear of the path (xs, ys), placed before or after
    it along x or y, or None when no pane of the sizes tried fits. Drawn directly: most panes at
    random spots leave no room beside a circling path (a circling clip took 245 ms by rejection,
    8 ms this way)."""
    for _ in range(tries):
        size = rng.uniform(*PANE_SIDES, 2)  # width, height
        spans = [(xs.min() - reach, xs.max() + reach), (ys.min() - reach, ys.max() + reach)]
        options = [(axis, low, high) for axis in (0, 1)
                   for low, high in ((EDGE, spans[axis][0] - size[axis]), (spans[axis][1], 1 - EDGE - size[axis]))
                   if low < high]
        if options:
            axis, low, high = options[rng.integers(len(options))]
            corner = [0.0, 0.0]
            corner[axis] = rng.uniform(low, high)
            corner[1 - axis] = rng.uniform(EDGE, 1 - EDGE - size[1 - axis])
            return corner[0], corner[1], corner[0] + size[0], corner[1] + size[1]
    return None


def write_context_dataset(out_dir, per_class=40, seed=0, fps=8, workers=2):
    """Write ``per_class`` clips of each context class and the label map ``OUT/modes.yaml`` (class
    folder → robot mode), ``workers`` clips at a time (numpy and the encoders release the GIL:
    1.5x faster with two threads, 1,875 clips in 23 s). Each clip has its own seed, so what is drawn does not depend on
    ``workers``. Returns the class names."""
    out_dir = Path(out_dir)
    jobs = [(out_dir, name, n, (seed, i, n), fps) for i, name in enumerate(CONTEXT_CLASSES) for n in range(per_class)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(_write_context_clip, *zip(*jobs)))
    (out_dir / CONTEXT_LABEL_MAP).write_text("".join(f"{name}: {mode}\n" for name, mode in CONTEXT_CLASSES.items()))
    return list(CONTEXT_CLASSES)


def _write_context_clip(out_dir, name, n, seed, fps):
    frames = render_action(name, np.random.default_rng(seed), fps=fps).frames
    write_video(out_dir / name / f"{name}_{n:03d}{'.mp4' if n % 2 == 0 else '.avi'}", frames, fps=fps)


# Continuous recordings: one scene, one action after another, and the timeline of which when.


class TimelineError(UserError, ValueError):
    """A timeline file that cannot be scored against; the message names the file, segment and fix."""


def recording_pane(rng):
    """A pane along the top or the bottom of the frame, 0.4-0.46 frame widths high: room over it for
    the widest circling, and below (or above) it for any action in open space. (Along a side there
    is no room for the widest to-and-fro both over the pane and beside it.)"""
    high, wide = rng.uniform(0.4, 0.46), rng.uniform(0.5, 0.9)
    y0, x0 = rng.uniform(0.02, 0.04), rng.uniform(0.02, 0.98 - wide)
    y0, y1 = (y0, y0 + high) if rng.random() < 0.5 else (1 - y0 - high, 1 - y0)
    return x0, y0, x0 + wide, y1


def _segment_path(label, scene, start, fps, rng):
    """4-7 s of ``label`` at a new spot where it happens. From ``start`` (where the previous segment
    left the hand) the hand first glides there, easing in and out over 0.3-0.5 s."""
    motion, where, _ = CONTEXT_ACTIONS[label]
    t = np.arange(round(rng.uniform(4, 7) * fps)) / fps
    dx, dy = motion(t, rng)
    if where == EITHER:
        where = PANE if rng.random() < 0.5 else OPEN
    placed = place_path(dx, dy, where, scene, rng)
    if placed is None:
        raise RuntimeError(f"no room for {label} in the recording's scene (pane {scene.pane})")
    if start is None:
        return placed
    s = np.clip((t + 1 / fps) / rng.uniform(0.3, 0.5), 0, 1)
    ease = s * s * (3 - 2 * s)
    return tuple(begin + ease * (end - begin) for begin, end in zip(start, placed))


def timeline_path(video_path):
    """``x/rec.mp4`` → ``x/rec.timeline.json``."""
    return Path(video_path).with_suffix(".timeline.json")


def write_recording(out_path, segments, seed=0, fps=8, size=FRAME_SIZE):
    """Write one continuous video of ``segments`` context actions, consecutive ones different, in one
    scene as from a fixed camera (background, noise, hand and pane stay), and its timeline beside it
    (``timeline_path``). Returns the timeline."""
    if segments < 1:
        raise UserError(f"--segments must be at least 1, not {segments}")
    rng = np.random.default_rng(seed)
    scene = with_pane(random_scene(rng, size), recording_pane(rng), rng)
    names = list(CONTEXT_ACTIONS)
    steps = np.r_[rng.integers(len(names)), rng.integers(1, len(names), segments - 1)]  # never 0: a new class
    labels = [names[i] for i in np.cumsum(steps) % len(names)]
    paths, here = [], None
    for label in labels:
        paths.append(_segment_path(label, scene, here, fps, rng))
        here = paths[-1][0][-1], paths[-1][1][-1]
    xs, ys = (np.concatenate(axis) for axis in zip(*paths))
    chunk = 256  # frames rendered at once: bounded memory for long recordings
    write_video(out_path, np.concatenate([render_hand(scene, xs[i : i + chunk], ys[i : i + chunk], rng)
                                          for i in range(0, len(xs), chunk)]), fps=fps)
    bounds = np.cumsum([0] + [len(x) for x, _ in paths]) / fps
    timeline = {
        "video": Path(out_path).name, "fps": float(fps), "duration": round(float(bounds[-1]), 6),
        "segments": [{"start": round(start, 6), "end": round(end, 6), "label": label, "mode": CONTEXT_CLASSES[label]}
                     for start, end, label in zip(bounds[:-1].tolist(), bounds[1:].tolist(), labels)],
    }
    timeline_path(out_path).write_text(json.dumps(timeline, indent=1) + "\n")
    return timeline


def read_timeline(path):
    """A timeline file, ours or one a user wrote: a JSON object whose ``segments`` each have numeric
    ``start`` < ``end`` (seconds) and a ``label`` (``mode`` defaults to the label), sorted and not
    overlapping. Returns it with every segment's ``mode`` filled in."""
    path = Path(path)
    example = '{"segments": [{"start": 0.0, "end": 5.25, "label": "wave", "mode": "greet_mode"}, ...]}'
    try:
        timeline = json.loads(path.read_text())
    except FileNotFoundError:
        raise TimelineError(f"timeline {path} not found; write one like {example}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise TimelineError(f"timeline {path} is not JSON ({err}); it should read like {example}") from None
    if not isinstance(timeline, dict) or not isinstance(timeline.get("segments"), list):
        raise TimelineError(f"timeline {path} must be a JSON object with a list of segments, like {example}")
    end_before = -math.inf
    for i, segment in enumerate(timeline["segments"]):
        where = f"timeline {path}, segment {i}"
        if not isinstance(segment, dict):
            raise TimelineError(f"{where}: must be an object with start, end and label, like {example}")
        start, end, label = segment.get("start"), segment.get("end"), segment.get("label")
        if not all(_is_seconds(v) for v in (start, end)):
            raise TimelineError(f"{where}: start and end must be numbers of seconds, not {start!r} and {end!r}")
        if not start < end:
            raise TimelineError(f"{where}: start ({start} s) must come before end ({end} s)")
        if not isinstance(label, str) or not label:
            raise TimelineError(f'{where}: needs a "label" string (the class folder name, e.g. "wave")')
        if not isinstance(segment.get("mode", label), str):
            raise TimelineError(f'{where}: "mode" must be a string (e.g. "greet_mode"), or left out to be the label')
        if start < end_before:
            raise TimelineError(f"{where} starts at {start} s, before segment {i - 1} ends ({end_before} s); "
                                "sort the segments by start and make each start at or after the previous end")
        end_before = end
    return {**timeline, "segments": [{**segment, "mode": segment.get("mode", segment["label"])}
                                     for segment in timeline["segments"]]}


def _is_seconds(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
