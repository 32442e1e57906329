"""A second, independent generator of labelled motion clips and recordings with timelines, made to
check the stream recipe on data the project's own `video-llama synth` did not make (issue 29: "aim
at the skill, not at the quickstart's generator").

Written by a session that had not seen synth's code, as a new user would: 320x240 clips at 15 fps
(recordings at 30), each with its own textured background (colour blotches, stripes or a checker,
grain, and without --easy up to four clutter boxes), fresh noise every frame, and a disc or a thin
outlined rectangle that moves: `swipe_horizontal` and `swipe_vertical` to and fro at 0.8-1.6 Hz,
`orbit` circling at 0.3-0.7 turns a second either way, `still` jittering by 0.5-2.5 px. Recordings
keep one scene and glide 0.3 s between actions; their timelines hold `segments` of
`start`, `end`, `label`, and `modes.yaml` beside the recordings' folder maps the four classes to modes.

    .venv/bin/python benchmarks/unseen_motion.py clips --out /tmp/unseen/videos_easy --per-class 250 --easy
    .venv/bin/python benchmarks/unseen_motion.py stream --out /tmp/unseen/recordings_easy --fps 30 --easy
    .venv/bin/python benchmarks/unseen_motion.py downscale --out /tmp/unseen/videos_easy96 --src /tmp/unseen/videos_easy

(`downscale`: the same clips re-encoded to 96x96 at 8 fps, synth's format, to tell format from content.)
The figures made with it are in docs/streams.md ("On data the project did not make").
"""
import argparse
import json
import math
import os
from multiprocessing import Pool

import av
import numpy as np

W, H = 320, 240
EASY = os.environ.get("UNSEEN_EASY") == "1"  # set by --easy: no clutter boxes, a bigger object, milder grain
CLASSES = ["swipe_horizontal", "swipe_vertical", "orbit", "still"]
MODES = {"swipe_horizontal": "greet_mode", "swipe_vertical": "clean_mode", "orbit": "follow_mode", "still": "idle_mode"}
YY, XX = np.mgrid[0:H, 0:W].astype(np.float32)


def background(rng):
    base = rng.uniform(40, 200, 3)
    # low-frequency colour blotches
    coarse = rng.normal(0, 30, (6, 8, 3))
    ys = np.linspace(0, 5, H)
    xs = np.linspace(0, 7, W)
    y0 = np.floor(ys).astype(int).clip(0, 4)
    x0 = np.floor(xs).astype(int).clip(0, 6)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    c00 = coarse[y0][:, x0]
    c01 = coarse[y0][:, x0 + 1]
    c10 = coarse[y0 + 1][:, x0]
    c11 = coarse[y0 + 1][:, x0 + 1]
    low = (c00 * (1 - fx) + c01 * fx) * (1 - fy) + (c10 * (1 - fx) + c11 * fx) * fy
    img = base[None, None, :] + low
    # texture: stripes or checker or grain
    kind = rng.integers(3)
    if kind == 0:
        ang = rng.uniform(0, math.pi)
        per = rng.uniform(6, 30)
        s = np.sin((XX * math.cos(ang) + YY * math.sin(ang)) * 2 * math.pi / per)
        img += (rng.uniform(8, 25) * s)[..., None]
    elif kind == 1:
        cell = int(rng.integers(8, 32))
        chk = ((XX // cell + YY // cell) % 2) * 2 - 1
        img += (rng.uniform(6, 18) * chk)[..., None]
    img += rng.normal(0, rng.uniform(2, 6) if EASY else rng.uniform(4, 14), (H, W, 3))  # static grain
    # a few random clutter rectangles
    for _ in range(0 if EASY else rng.integers(0, 5)):
        x, y = rng.integers(0, W - 20), rng.integers(0, H - 20)
        w, h = rng.integers(10, 60), rng.integers(10, 50)
        img[y:y + h, x:x + w] = rng.uniform(0, 255, 3)
    return img.astype(np.float32)


def make_object(rng):
    return {
        "shape": "disc" if rng.random() < 0.5 else "rect",
        "r": float(rng.uniform(16, 28) if EASY else rng.uniform(10, 22)),             # disc radius / rect half-width
        "aspect": float(rng.uniform(0.3, 0.7)),      # rect half-height / half-width
        "color": rng.uniform(0, 255, 3).astype(np.float32),
    }


def draw(frame, obj, x, y):
    r = obj["r"]
    x0, x1 = max(int(x - r - 3), 0), min(int(x + r + 3), W)
    y0, y1 = max(int(y - r - 3), 0), min(int(y + r + 3), H)
    if x0 >= x1 or y0 >= y1:
        return
    xx, yy = XX[y0:y1, x0:x1] - x, YY[y0:y1, x0:x1] - y
    if obj["shape"] == "disc":
        d = np.sqrt(xx * xx + yy * yy)
        inner, outer = d <= r - 2, d <= r
    else:
        hw, hh = r, r * obj["aspect"]
        inner = (np.abs(xx) <= hw - 2) & (np.abs(yy) <= hh - 2)
        outer = (np.abs(xx) <= hw) & (np.abs(yy) <= hh)
    patch = frame[y0:y1, x0:x1]
    patch[outer] = 20.0
    patch[inner] = obj["color"]


def motion_params(label, rng, obj):
    """A motion: a function t -> (x, y), inside the frame."""
    m = obj["r"] + 4
    if label == "swipe_horizontal":
        A = rng.uniform(30, 90)
        f = rng.uniform(0.8, 1.6)
        cx = rng.uniform(m + A, W - m - A)
        cy = rng.uniform(m + 5, H - m - 5)
        ph = rng.uniform(0, 2 * math.pi)
        wob = rng.uniform(0, 4)
        return lambda t: (cx + A * math.sin(2 * math.pi * f * t + ph), cy + wob * math.sin(2 * math.pi * 0.7 * t))
    if label == "swipe_vertical":
        A = rng.uniform(25, 70)
        f = rng.uniform(0.8, 1.6)
        cx = rng.uniform(m + 5, W - m - 5)
        cy = rng.uniform(m + A, H - m - A)
        ph = rng.uniform(0, 2 * math.pi)
        wob = rng.uniform(0, 4)
        return lambda t: (cx + wob * math.sin(2 * math.pi * 0.7 * t), cy + A * math.sin(2 * math.pi * f * t + ph))
    if label == "orbit":
        R = rng.uniform(20, 60)
        f = rng.uniform(0.3, 0.7) * (1 if rng.random() < 0.5 else -1)
        cx = rng.uniform(m + R, W - m - R)
        cy = rng.uniform(m + R, H - m - R)
        ph = rng.uniform(0, 2 * math.pi)
        ry = R * rng.uniform(0.8, 1.0)
        return lambda t: (cx + R * math.cos(2 * math.pi * f * t + ph), cy + ry * math.sin(2 * math.pi * f * t + ph))
    if label == "still":
        cx = rng.uniform(m, W - m)
        cy = rng.uniform(m, H - m)
        jit = rng.uniform(0.5, 2.5)
        seed = int(rng.integers(1 << 30))

        def pos(t, cx=cx, cy=cy):
            r = np.random.default_rng(seed + int(t * 1000))
            return cx + jit * r.standard_normal(), cy + jit * r.standard_normal()
        return pos
    raise ValueError(label)


class Writer:
    def __init__(self, path, fps):
        self.c = av.open(str(path), "w")
        s = self.c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "26"}
        self.s = s

    def write(self, img):
        fr = av.VideoFrame.from_ndarray(img, format="rgb24")
        for p in self.s.encode(fr):
            self.c.mux(p)

    def close(self):
        for p in self.s.encode():
            self.c.mux(p)
        self.c.close()


def render(frame_bg, obj, x, y, rng, noise):
    f = frame_bg.copy()
    draw(f, obj, x, y)
    if noise:
        f += rng.normal(0, noise, (1, 1, 1)) + rng.normal(0, noise, f.shape).astype(np.float32)
    return np.clip(f, 0, 255).astype(np.uint8)


def one_clip(args):
    label, idx, out, fps, seed = args
    rng = np.random.default_rng(seed)
    bg = background(rng)
    obj = make_object(rng)
    pos = motion_params(label, rng, obj)
    dur = rng.uniform(3, 6)
    noise = rng.uniform(1, 5)
    path = os.path.join(out, label, f"{label[:2]}{idx:04d}.mp4")
    wr = Writer(path, fps)
    t0 = rng.uniform(0, 10)
    for i in range(int(dur * fps)):
        x, y = pos(t0 + i / fps)
        wr.write(render(bg, obj, x, y, rng, noise))
    wr.close()
    return path


def clips(out, per_class, fps, seed, procs):
    for c in CLASSES:
        os.makedirs(os.path.join(out, c), exist_ok=True)
    jobs = [(c, i, out, fps, seed * 1_000_003 + k * 10_007 + i) for k, c in enumerate(CLASSES) for i in range(per_class)]
    with Pool(procs) as p:
        for n, _ in enumerate(p.imap_unordered(one_clip, jobs, chunksize=8)):
            if n % 200 == 0:
                print(n, "clips", flush=True)


def recording(path, fps, seed, n_seg):
    rng = np.random.default_rng(seed)
    bg = background(rng)
    obj = make_object(rng)
    noise = rng.uniform(1, 5)
    labels = []
    for _ in range(n_seg):
        choices = [c for c in CLASSES if not labels or c != labels[-1]]
        labels.append(str(rng.choice(choices)))
    wr = Writer(path, fps)
    segs, t, frame = [], 0.0, 0
    last = (W / 2, H / 2)
    glide = 0.3
    for lab in labels:
        dur = float(rng.uniform(4, 7))
        pos = motion_params(lab, rng, obj)
        t_local0 = rng.uniform(0, 10)
        start = frame / fps
        end_t = t + dur
        first = pos(t_local0 + glide)
        while frame / fps < end_t:
            tl = frame / fps - t
            if tl < glide:  # glide from where the last action left the object to the new action's path
                a = tl / glide
                a = a * a * (3 - 2 * a)
                x = last[0] + (first[0] - last[0]) * a
                y = last[1] + (first[1] - last[1]) * a
            else:
                x, y = pos(t_local0 + tl)
            wr.write(render(bg, obj, x, y, rng, noise))
            frame += 1
        last = (x, y)
        segs.append({"start": round(start, 3), "end": round(frame / fps, 3), "label": lab})
        t = frame / fps
    wr.close()
    with open(os.path.splitext(path)[0] + ".timeline.json", "w") as f:
        json.dump({"segments": segs}, f, indent=1)
    return segs


def _downscale_one(args):
    src_root, dst_root, rel, fps, side = args
    from PIL import Image

    src, dst = os.path.join(src_root, rel), os.path.join(dst_root, rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with av.open(src) as container:
        source_fps = float(container.streams.video[0].average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    n = int(len(frames) / source_fps * fps)
    with av.open(dst, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "20"}
        for i in range(n):
            frame = frames[min(int(round(i / fps * source_fps)), len(frames) - 1)]
            image = np.asarray(Image.fromarray(frame).resize((side, side), Image.BILINEAR))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def downscale(src, out, fps=8, side=96, procs=2):
    rels = [os.path.join(c, f) for c in sorted(os.listdir(src)) if os.path.isdir(os.path.join(src, c))
            for f in sorted(os.listdir(os.path.join(src, c)))]
    with Pool(procs) as pool:
        pool.map(_downscale_one, [(src, out, rel, fps, side) for rel in rels], chunksize=16)
    print(len(rels), "clips")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["clips", "stream", "downscale"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--src", help="downscale: the clips' folder")
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--n", type=int, default=3, help="stream: recordings")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--easy", action="store_true", help="no clutter boxes, a bigger object, milder grain")
    args = parser.parse_args()
    if args.easy:  # read by the worker processes too
        os.environ["UNSEEN_EASY"] = "1"
        global EASY
        EASY = True
    if args.what == "clips":
        clips(args.out, args.per_class, args.fps, args.seed, args.procs)
    elif args.what == "downscale":
        downscale(args.src, args.out, procs=args.procs)
    else:
        os.makedirs(args.out, exist_ok=True)
        for k in range(args.n):
            rng = np.random.default_rng(args.seed + 1000 + k)
            segs = recording(os.path.join(args.out, f"rec{k}.mp4"), args.fps, args.seed + 1000 + k, int(rng.integers(10, 13)))
            print(f"rec{k}: {len(segs)} segments, {segs[-1]['end']:.1f} s:", [s["label"] for s in segs])
        with open(os.path.join(os.path.dirname(args.out.rstrip("/")), "modes.yaml"), "w") as f:
            for label, mode in MODES.items():
                f.write(f"{label}: {mode}\n")


if __name__ == "__main__":
    main()
