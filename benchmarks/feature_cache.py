"""Training samples per second from pixels and from a feature cache (``video-llama cache-features``),
frozen ViT and image Q-Former, the same model, clips and steps; and what the cache costs to write.

    .venv/bin/python benchmarks/feature_cache.py [--steps 40] [--clips 16] [--options model.img_size=224 ...]

The tiny recipe (``train_configs/tiny_cpu_finetune.yaml``: encoders frozen) on clips written here
(``benchmarks/train_step.py``'s), its evaluation processor for the training split in both runs (one
cache view is then exactly what the pixels give), a step's time measured as train_step.py does it
(runner.train(), median gap between steps after the warmup, data loading included).
"""

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
EVAL_FOR_TRAIN = ["datasets.webvid_instruct.vis_processor.train.name=alpro_video_eval"]


def train_step_module():
    spec = importlib.util.spec_from_file_location("train_step", REPO / "benchmarks" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seconds_per_step(options, steps, warmup, rounds, bench):
    from video_llama.common.config import Config
    from video_llama.common.registry import registry

    cfg = Config.from_file(str(REPO / "train_configs" / "tiny_cpu_finetune.yaml"), options)
    torch.manual_seed(0)
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    runner = registry.get_runner_class(cfg.run_cfg.runner)(cfg=cfg, task=task, model=task.build_model(cfg),
                                                           datasets=task.build_datasets(cfg))
    return statistics.median(bench.framework_step(runner, warmup) for _ in range(rounds)), cfg.run_cfg.batch_size_train


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--options", nargs="*", default=[])
    args = parser.parse_args()
    import video_llama  # noqa: F401  (registers the built-ins)
    from video_llama.jobs.feature_cache import write_feature_cache

    bench = train_step_module()
    work = Path(tempfile.mkdtemp(prefix="feature-cache-"))
    data = bench.generated_data(work, clips=args.clips)
    options = [*data, *EVAL_FOR_TRAIN, "model.vit_ckpt=random", "model.q_former_model=random", *args.options,
               f"run.iters_per_epoch={args.steps}", "run.max_epoch=1", "run.valid_splits=[]",
               f"run.output_dir={work / 'out'}", "run.log_freq=1000000"]
    torch.manual_seed(0)
    start = time.perf_counter()
    made = write_feature_cache(str(REPO / "train_configs" / "tiny_cpu_finetune.yaml"), work / "features", 1, options)
    write_seconds = time.perf_counter() - start
    pixels, batch = seconds_per_step(options, args.steps, args.warmup, args.rounds, bench)
    cached, _ = seconds_per_step([*options, f"datasets.webvid_instruct.feature_cache={work / 'features'}"],
                                 args.steps, args.warmup, args.rounds, bench)
    print(f"command: {' '.join(sys.argv)}")
    print(f"{args.rounds} × {args.steps} steps of batch {batch} on the CPU ({torch.get_num_threads()} threads), median after "
          f"{args.warmup}; cache of {len(made['clips'])} clips written in {write_seconds:.1f} s\n")
    print("| training reads | s/step | samples/s |\n| --- | ---: | ---: |")
    print(f"| pixels (decode, ViT, image Q-Former) | {pixels:.4f} | {batch / pixels:.1f} |")
    print(f"| the feature cache | {cached:.4f} | {batch / cached:.1f} |")
    print(f"\nspeed-up: {pixels / cached:.2f}x")


if __name__ == "__main__":
    main()
