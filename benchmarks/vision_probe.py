"""Where does the motion get lost? Train only the vision stack of a model config with a small
classifier on top (no LLM), on a `prepare` output, and report validation top-1 per epoch.

* ``--head video``: the video tokens (ViT → image Q-Former → video Q-Former → llama_proj),
  averaged, then a linear layer: what the LLM could read from the video tokens;
* ``--head frames``: the image Q-Former's per-frame outputs concatenated in frame order, then an
  MLP: what the frames hold before the video Q-Former mixes them.

A gap between the two means the video Q-Former loses it. Clips are decoded once with the eval
processor (no augmentation) and cached in memory; a 4-class quickstart set takes about 6 s per epoch.

    .venv/bin/python benchmarks/vision_probe.py --head video --options model.frame_pos_embed_std=0.5
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn

from video_llama.common.config import Config
from video_llama.common.registry import registry
from video_llama.models.video_llama import VideoLLAMA

from synthetic_controls import train_one_epoch  # benchmarks/ is on the path when run as a script

TRAIN_CONFIG = "train_configs/quickstart_action_tiny.yaml"


def load_split(anno, videos, split, labels, processor):
    frames, targets = [], []
    for entry in json.loads((Path(anno) / f"{split}.json").read_text()):
        frames.append(processor(Path(videos) / entry["video"])[0])
        targets.append(labels.index(entry["QA"][0]["a"]))
    return torch.stack(frames), torch.tensor(targets)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=TRAIN_CONFIG, help="its model: section is probed")
    parser.add_argument("--videos", default="output/quickstart/videos")
    parser.add_argument("--anno", default="output/quickstart/annotations")
    parser.add_argument("--head", choices=("video", "frames"), default="video")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--options", nargs="*", default=[], help="model.* overrides, as in train.py")
    args = parser.parse_args()

    config = Config.from_file(args.config, args.options)
    cfg = config.model_cfg
    torch.manual_seed(0)
    model = VideoLLAMA.from_config(cfg)
    labels = json.loads((Path(args.anno) / "labels.json").read_text())["labels"]
    (dataset,) = config.datasets_cfg.values()  # the config's own eval processing
    eval_processor = dataset.vis_processor.eval
    processor = registry.get_processor_class(eval_processor.name).from_config(eval_processor)
    start = time.monotonic()
    x, y = load_split(args.anno, args.videos, "train", labels, processor)
    x_val, y_val = load_split(args.anno, args.videos, "val", labels, processor)
    print(f"decoded {len(x)} training / {len(x_val)} validation clips in {time.monotonic() - start:.0f} s")

    if args.head == "frames":
        width = x.shape[2] * cfg.num_query_token * cfg.qformer_hidden_size
        head = nn.Sequential(nn.Linear(width, 256), nn.GELU(), nn.Linear(256, len(labels)))
        classify = lambda frames: head(model.encode_frames(frames).flatten(1))  # noqa: E731
    else:
        head = nn.Linear(model.llama_proj.out_features, len(labels))
        classify = lambda frames: head(model.encode_video(frames).mean(dim=1))  # noqa: E731
    params = [p for n, p in model.named_parameters() if not n.startswith("llama_model.")] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    batch, warmup = 8, 50
    total = args.epochs * math.ceil(len(x) / batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total)))
    for epoch in range(args.epochs):
        model.train()
        train_one_epoch(classify, optimizer, x, y, batch, schedule)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([classify(x_val[i:i + 32]).argmax(1) for i in range(0, len(x_val), 32)])
        per_class = {label: round(((pred == y_val) & (y_val == k)).sum().item() / (y_val == k).sum().item(), 2)
                     for k, label in enumerate(labels)}
        print(f"epoch {epoch}: validation top-1 {(pred == y_val).float().mean():.3f} {per_class}", flush=True)


if __name__ == "__main__":
    main()
