"""Controls for the synthetic action data: is the label in the motion, and only there?

Trains small classifiers on the same train/test split of a `prepare` output and reports held-out
accuracy:

* mean colour of the clip (logistic regression on raw pixels): should stay near chance;
* one middle frame (a small 2D CNN): should stay near chance (where the shape is says nothing);
* 8 frames (a small 3D CNN): should be high, so the data is learnable from motion;
* with ``--shuffled-recipe``: the quickstart recipe itself (train_configs/quickstart_action_tiny.yaml)
  trained on the same clips with the answers shuffled across the training and validation videos,
  then evaluated (rank mode) on the true test labels: should stay near chance, so the quickstart's
  accuracy comes from the videos and not from anything else in the recipe.

    .venv/bin/python benchmarks/synthetic_controls.py --videos output/quickstart/videos \
        --anno output/quickstart/annotations [--epochs 15] [--shuffled-recipe]
"""

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from video_llama.processors.normalization import standardize_clip
from video_llama.processors.video_decoding import load_video

TRAIN_CONFIG = "train_configs/quickstart_action_tiny.yaml"
EVAL_CONFIG = "eval_configs/quickstart_action_tiny.yaml"


def load_split(anno_dir, videos, split, labels, size=64):
    """(raw clips in [0, 1], standardised clips, targets) of one split."""
    entries = json.loads((Path(anno_dir) / f"{split}.json").read_text())
    raw, targets = [], []
    for entry in entries:
        raw.append(load_video(Path(videos) / entry["video"], n_frms=8, height=size, width=size).frames.float() / 255)
        targets.append(labels.index(entry["QA"][0]["a"]))
    raw = torch.stack(raw)
    return raw, torch.stack([standardize_clip(c) for c in raw]), torch.tensor(targets)


def train_one_epoch(classify, optimizer, x, y, batch, schedule=None):
    """One shuffled pass of cross-entropy training (``schedule`` steps per batch)."""
    order = torch.randperm(len(x))
    for i in range(0, len(x), batch):
        idx = order[i:i + batch]
        loss = nn.functional.cross_entropy(classify(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()


def fit(model, x, y, x_test, y_test, epochs, lr=3e-3, batch=16):
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        train_one_epoch(model, opt, x, y, batch)
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def classifier_controls(anno, videos, labels, epochs):
    n = len(labels)
    raw, x, y = load_split(anno, videos, "train", labels)
    raw_test, xt, yt = load_split(anno, videos, "test", labels)
    mean_colour = nn.Sequential(nn.Flatten(), nn.LazyLinear(n))
    single = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                           nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, n))
    video = nn.Sequential(nn.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                          nn.Conv3d(16, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(), nn.MaxPool3d(2),
                          nn.Conv3d(32, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                          nn.Flatten(), nn.Linear(32, n))
    middle = x.shape[2] // 2
    print(f"{len(x)} training / {len(xt)} test clips, {n} classes (chance {1 / n:.2f})")
    return {
        "mean colour": fit(mean_colour, raw.mean(dim=(2, 3, 4)), y, raw_test.mean(dim=(2, 3, 4)), yt, epochs * 4),
        "single middle frame": fit(single, x[:, :, middle], y, xt[:, :, middle], yt, epochs),
        "8 frames (3D CNN)": fit(video, x, y, xt, yt, epochs),
    }


def shuffled_recipe(anno, videos, seed=0):
    """The quickstart recipe with answers shuffled across training and validation videos."""
    from video_llama.jobs.experiment import evaluate, train

    anno = Path(anno)
    with tempfile.TemporaryDirectory() as tmp:
        shuffled = Path(tmp)
        rng = random.Random(seed)
        for split in ("train", "val"):
            entries = json.loads((anno / f"{split}.json").read_text())
            answers = [entry["QA"][0]["a"] for entry in entries]
            rng.shuffle(answers)
            for entry, answer in zip(entries, answers):
                entry["QA"][0]["a"] = answer
            (shuffled / f"{split}.json").write_text(json.dumps(entries))
        (shuffled / "labels.json").write_text((anno / "labels.json").read_text())
        splits = json.dumps({"train": str(shuffled / "train.json"), "val": str(shuffled / "val.json")})
        summary = train(["--cfg-path", TRAIN_CONFIG, "--options", f"datasets.webvid_instruct.build_info.anno_dir={splits}",
                         f"datasets.webvid_instruct.build_info.videos_dir={videos}", f"run.output_dir={tmp}/runs"])
        result = evaluate(["--cfg-path", EVAL_CONFIG, "--options", f"model.ckpt={summary['run_dir']}",
                           f"datasets.webvid_instruct.build_info.anno_dir={{test: {anno / 'test.json'}}}",
                           f"datasets.webvid_instruct.build_info.videos_dir={videos}", f"run.output_dir={tmp}/eval"])
    return result["test_top1"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", default="output/quickstart/videos")
    parser.add_argument("--anno", default="output/quickstart/annotations")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--shuffled-recipe", action="store_true", help="also train the quickstart recipe on shuffled labels")
    args = parser.parse_args()
    labels = json.loads((Path(args.anno) / "labels.json").read_text())["labels"]
    start = time.monotonic()
    results = classifier_controls(args.anno, args.videos, labels, args.epochs)
    if args.shuffled_recipe:
        results["quickstart recipe, shuffled labels"] = shuffled_recipe(args.anno, args.videos)
    print(f"controls took {time.monotonic() - start:.0f} s")
    for name, acc in results.items():
        print(f"  {name:<36} held-out top-1 {acc:.3f}")


if __name__ == "__main__":
    main()
