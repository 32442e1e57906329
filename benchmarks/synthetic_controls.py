"""Controls for the synthetic action data: is the label in the motion, and only there?

Trains three small classifiers on the same train/test split of a `prepare` output and reports
held-out accuracy:

* mean colour of the clip (logistic regression): should stay near chance;
* one middle frame (a small 2D CNN): should stay near chance (position alone says nothing);
* 8 frames (a small 3D CNN): should be high, so the data is learnable from motion.

    .venv/bin/python benchmarks/synthetic_controls.py --videos output/quickstart/videos \
        --anno output/quickstart/annotations [--epochs 15]
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn as nn

from video_llama.processors.video_decoding import load_video


def load_split(anno_dir, videos, split, labels, size=64):
    entries = json.loads((Path(anno_dir) / f"{split}.json").read_text())
    clips, targets = [], []
    for entry in entries:
        clip = load_video(Path(videos) / entry["video"], n_frms=8, height=size, width=size).frames.float() / 255
        clips.append((clip - clip.mean()) / (clip.std() + 1e-5))
        targets.append(labels.index(entry["QA"][0]["a"]))
    return torch.stack(clips), torch.tensor(targets)


def fit(model, x, y, x_test, y_test, epochs, lr=3e-3, batch=16):
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default="output/quickstart/videos")
    parser.add_argument("--anno", default="output/quickstart/annotations")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    labels = json.loads((Path(args.anno) / "labels.json").read_text())["labels"]
    n = len(labels)
    start = time.monotonic()
    x, y = load_split(args.anno, args.videos, "train", labels)
    xt, yt = load_split(args.anno, args.videos, "test", labels)
    mean_colour = nn.Sequential(nn.Flatten(), nn.LazyLinear(n))
    colour_x = torch.stack([c.mean(dim=(1, 2, 3)) for c in x]), torch.stack([c.mean(dim=(1, 2, 3)) for c in xt])
    single = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                           nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, n))
    video = nn.Sequential(nn.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                          nn.Conv3d(16, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(), nn.MaxPool3d(2),
                          nn.Conv3d(32, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                          nn.Flatten(), nn.Linear(32, n))
    results = {
        "mean colour": fit(mean_colour, *colour_x[:1], y, colour_x[1], yt, args.epochs * 4),
        "single middle frame": fit(single, x[:, :, 4], y, xt[:, :, 4], yt, args.epochs),
        "8 frames (3D CNN)": fit(video, x, y, xt, yt, args.epochs),
    }
    print(f"{len(x)} training / {len(xt)} test clips, {n} classes (chance {1 / n:.2f}), "
          f"{time.monotonic() - start:.0f} s")
    for name, acc in results.items():
        print(f"  {name:<22} held-out top-1 {acc:.3f}")


if __name__ == "__main__":
    main()
