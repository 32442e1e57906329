"""A synthetic action dataset whose classes differ only in *motion*.

Each clip shows one shape on a noisy background. Colour, shape, size, speed, start position,
background, noise, length and container (MP4/AVI) are drawn at random for every clip and are the
same for every class, so neither one frame nor the clip's mean colour tells the classes apart: a
model has to follow the shape over time. Written as real encoded video files in the layout
``prepare`` reads: ``OUT/<class>/<class>_<n>.<ext>``.
"""

import math
from pathlib import Path

import numpy as np

from video_llama.datasets.video_writer import write_video

FRAME_SIZE = 96


def _to_and_fro(t, rng):  # a hand waving: horizontal oscillation
    phase, amp, freq = rng.uniform(0, 2 * math.pi), rng.uniform(0.18, 0.3), rng.uniform(0.12, 0.22)
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.8)
    return cx + amp * np.sin(2 * math.pi * freq * t + phase), np.full_like(t, cy)


def _circling(t, rng):  # wiping a glass door: circular motion
    phase, radius, freq = rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.28), rng.uniform(0.08, 0.16)
    direction = rng.choice([-1, 1])
    cx, cy = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)
    angle = direction * 2 * math.pi * freq * t + phase
    return cx + radius * np.cos(angle), cy + radius * np.sin(angle)


def _falling(t, rng):  # falling down: accelerating downwards
    x0, y0, g = rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.3), rng.uniform(0.0015, 0.004)
    return np.full_like(t, x0), np.minimum(y0 + g * t**2, 0.92)


def _crossing(t, rng):  # walking across: constant speed, either direction
    speed, direction = rng.uniform(0.02, 0.04), rng.choice([-1, 1])
    y0 = rng.uniform(0.15, 0.85)
    x = 0.1 + speed * t if direction > 0 else 0.9 - speed * t
    return np.clip(x, 0.05, 0.95), np.full_like(t, y0)


def _bouncing(t, rng):  # jumping: vertical oscillation
    phase, amp, freq = rng.uniform(0, 2 * math.pi), rng.uniform(0.18, 0.3), rng.uniform(0.12, 0.22)
    cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.7)
    return np.full_like(t, cx), cy + amp * np.abs(np.sin(2 * math.pi * freq * t + phase)) - amp / 2


def _still(t, rng):  # standing: small jitter around one place
    cx, cy = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85)
    return cx + rng.normal(0, 0.004, t.shape), cy + rng.normal(0, 0.004, t.shape)


MOTIONS = {
    "to_and_fro": _to_and_fro,
    "circling": _circling,
    "falling_down": _falling,
    "crossing": _crossing,
    "bouncing": _bouncing,
    "standing_still": _still,
}


def render_clip(motion, rng, num_frames=None, size=FRAME_SIZE):
    """uint8 frames (T, size, size, 3) of one clip of ``motion``."""
    num_frames = num_frames or int(rng.integers(16, 41))
    t = np.arange(num_frames, dtype=np.float64)
    xs, ys = MOTIONS[motion](t, rng)
    background = rng.integers(0, 256, size=3)
    colour = rng.integers(0, 256, size=3)
    while np.abs(colour.astype(int) - background).sum() < 150:  # keep the shape visible
        colour = rng.integers(0, 256, size=3)
    radius = rng.uniform(0.06, 0.13) * size
    round_shape = rng.random() < 0.5
    noise = rng.uniform(2, 14)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for i in range(num_frames):
        dx, dy = xx - xs[i] * size, yy - ys[i] * size
        mask = (dx**2 + dy**2 <= radius**2) if round_shape else (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
        frame = np.broadcast_to(background, (size, size, 3)).astype(np.float64)
        frame[mask] = colour
        frame += rng.normal(0, noise, frame.shape)
        frames[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def write_synthetic_dataset(out_dir, classes=4, per_class=40, seed=0, fps=8):
    """Write ``per_class`` clips for each of the first ``classes`` motions. Returns the class names."""
    if not 2 <= classes <= len(MOTIONS):
        raise ValueError(f"--classes must be between 2 and {len(MOTIONS)}")
    names = list(MOTIONS)[:classes]
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    for name in names:
        for n in range(per_class):
            ext = ".mp4" if n % 2 == 0 else ".avi"
            write_video(out_dir / name / f"{name}_{n:03d}{ext}", render_clip(name, rng), fps=fps)
    return names
