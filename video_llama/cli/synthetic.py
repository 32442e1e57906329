"""A synthetic action dataset whose classes differ only in *motion*.

Each clip shows one shape on a noisy background. Colour, shape, size, speed, start position,
background, noise, length and container (MP4/AVI) are drawn at random for every clip and are the
same for every class, so that neither one frame nor the clip's mean colour tells the classes
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
"""

import math
from pathlib import Path

import numpy as np

from video_llama.cli.video_writer import write_video

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
        from video_llama.common.errors import UserError

        raise UserError(f"--classes must be between 2 and {len(MOTIONS)}")
    names = list(MOTIONS)[:classes]
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    for name in names:
        for n in range(per_class):
            ext = ".mp4" if n % 2 == 0 else ".avi"
            write_video(out_dir / name / f"{name}_{n:03d}{ext}", render_clip(name, rng, wrap=wrap), fps=fps)
    return names
