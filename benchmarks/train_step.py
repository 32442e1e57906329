"""Samples per second and peak memory of training steps for a config, through the framework's runner
and through a bare PyTorch loop over the same model, data loader and optimizer, so that the
runner's overhead (accumulation windows, logging, progress bar, schedule, AMP and DDP wrappers)
shows as a ratio (target: within 5%).

    .venv/bin/python benchmarks/train_step.py                       # the tiny recipe on generated clips, CPU
    .venv/bin/python benchmarks/train_step.py --cfg-path X.yaml --options model.lora.r=8 ... [--steps 40]

A step's time is the wall time from one step's end to the next's (data loading included), the
median after ``--warmup`` steps. Peak memory: allocated on a GPU, the process's resident set on
CPU. Not yet: MFU (it needs the model's FLOPs per step; to come with the GPU measurements).
"""

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def generated_data(folder, clips=16):
    """A tiny LLM and ``clips`` 24-frame clips with an instruction JSON (two answers)."""
    from video_llama.data_tools.tiny_llm import write_tiny_llm
    from video_llama.data_tools.video_writer import write_video

    llm = write_tiny_llm(folder / "llm")
    records = []
    for i in range(clips):
        frames = np.random.default_rng(i).integers(0, 255, (24, 112, 112, 3), dtype=np.uint8)
        write_video(folder / f"clip{i}.mp4", frames)
        records.append({"video": f"clip{i}.mp4", "QA": [{"q": "Which mode?", "a": ["greet_mode", "clean_mode"][i % 2]}]})
    (folder / "train.json").write_text(json.dumps(records))
    return [f"model.llama_model={llm}", f"datasets.webvid_instruct.tokenizer_name={llm}",
            f"datasets.webvid_instruct.build_info.anno_dir={folder / 'train.json'}",
            f"datasets.webvid_instruct.build_info.videos_dir={folder}"]


def step_seconds(stamps, warmup):
    gaps = np.diff(stamps[warmup:])
    return statistics.median(gaps.tolist())


def framework_step(runner, warmup):
    """Median step time of runner.train(), stamped as each step's record is logged."""
    stamps = []
    log_metrics = runner._log_metrics

    def stamped(record, every):
        if "loss" in record:
            stamps.append(time.perf_counter())
        return log_metrics(record, every)

    runner._log_metrics = stamped
    try:
        runner.train()
    finally:
        runner._log_metrics = log_metrics
    return step_seconds(stamps, warmup)


def bare_step(runner, warmup):
    """Median step time of a plain loop over the runner's model, data loader and optimizer."""
    from video_llama.runners.runner_base import build_optimizer

    _, loader = runner._train_loader()
    optimizer = build_optimizer(runner.model, runner.run_cfg)
    model, device = runner.model, runner.device
    model.train()
    stamps = []
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        model(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return step_seconds(stamps, warmup)


def peak_memory(device):
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB allocated (GPU)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB resident (process, CPU)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg-path", default=str(REPO / "train_configs" / "tiny_cpu_finetune.yaml"))
    parser.add_argument("--options", nargs="*", default=[])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="framework and bare runs, interleaved; medians reported")
    args = parser.parse_args()

    import video_llama  # noqa: F401  (registers the built-ins)
    from video_llama.common.config import Config
    from video_llama.common.registry import registry

    work = Path(tempfile.mkdtemp(prefix="train-step-"))
    data = generated_data(work) if args.cfg_path.endswith("tiny_cpu_finetune.yaml") else []
    options = [*data, *args.options, f"run.iters_per_epoch={args.steps}", "run.max_epoch=1", "run.valid_splits=[]",
               f"run.output_dir={work / 'out'}", "run.log_freq=1000000"]
    cfg = Config.from_file(args.cfg_path, options)
    torch.manual_seed(0)
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    runner = registry.get_runner_class(cfg.run_cfg.runner)(cfg=cfg, task=task, model=task.build_model(cfg),
                                                           datasets=task.build_datasets(cfg))

    framework, bare = [], []
    for _ in range(args.rounds):  # interleaved, so that a drifting machine speed hits both alike
        framework.append(framework_step(runner, args.warmup))
        bare.append(bare_step(runner, args.warmup))
    framework, bare = statistics.median(framework), statistics.median(bare)
    model, device = runner.model, runner.device

    batch_size = cfg.run_cfg.batch_size_train
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{args.cfg_path} {' '.join(args.options)}".strip())
    print(f"{args.rounds} × {args.steps} steps of batch {batch_size} on {device} ({torch.get_num_threads()} threads), "
          f"median after {args.warmup}; {trainable:,} trainable parameters\n")
    print("| loop | s/step | samples/s |")
    print("| --- | ---: | ---: |")
    print(f"| framework (runner) | {framework:.4f} | {batch_size / framework:.2f} |")
    print(f"| bare PyTorch | {bare:.4f} | {batch_size / bare:.2f} |")
    print(f"\nframework / bare step time: {framework / bare:.3f}; peak memory: {peak_memory(device)}")


if __name__ == "__main__":
    main()
