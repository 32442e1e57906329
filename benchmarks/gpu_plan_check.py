"""The planner against a real GPU: peak memory, samples/s and MFU of the guide's stage 2 at full size
(EVA ViT-g, LLaMA-2-7B shape, random weights: nothing is downloaded), with the planner's prediction
beside each measurement.

    .venv/bin/python benchmarks/gpu_plan_check.py [--steps 10] [--peak-tflops 989] [--settings ...]

For each setting: the model of ``train_configs/visionbranch_stage2_finetune.yaml`` is built on the
GPU from the published shapes, one step is planned (``video-llama plan``'s code), then ``--steps``
real steps run on the planned batch (the longest samples), after a warmup step: the peak is
``torch.cuda.max_memory_allocated`` (what the caching allocator handed out), samples/s the median
step, MFU the planned FLOPs a step over the step time and ``--peak-tflops`` (dense bf16: H100 SXM
989, A100 312). One JSON line per setting.

Needs a CUDA GPU with room for the 7B shape (about 17 GiB with checkpointing). Not run yet: no GPU
has been lent to this project (docs/planning.md).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SETTINGS = {  # name: options over the YAML (batch 4, 8 frames, no LoRA)
    "as-written": [],
    "checkpointing": ["model.llm_grad_checkpoint=True"],
    "lora8-checkpointing": ["model.lora.r=8", "model.llm_grad_checkpoint=True"],
    "lora8": ["model.lora.r=8"],
}


def measure(name, options, steps, peak_tflops):
    from video_llama.common.config import Config
    from video_llama.common.registry import registry
    from video_llama.jobs.plan import data_shape, meta_model, model_config, plan_step, planned_batch, setting_of
    from video_llama.runners.runner_base import build_optimizer

    cfg = Config.from_file(str(REPO / "train_configs" / "visionbranch_stage2_finetune.yaml"), options)
    setting = setting_of(cfg)
    planned = plan_step(cfg, setting, gpu=True)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = meta_model(model_config(cfg, setting), gpu=True, device="cuda").train()  # the planner's model, real
    with torch.device("cuda"):
        batch = planned_batch(model, data_shape(cfg), setting)
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    optimizer = build_optimizer(model, cfg.run_cfg)
    autocast = torch.autocast("cuda", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.run_cfg.amp_dtype],
                              enabled=bool(cfg.run_cfg.amp))
    times = []
    for step in range(steps + 1):  # the first one warms up (cuBLAS handles, the optimizer's state)
        torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = task.train_step(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    measured = torch.cuda.max_memory_allocated()
    result = {"setting": name, "options": options, "planned_peak_gib": round(planned.peak / 2**30, 2),
              "measured_peak_gib": round(measured / 2**30, 2), "planned_over_measured": round(planned.peak / measured, 3),
              "samples_per_s": round(setting.batch / seconds, 2), "step_s": round(seconds, 3),
              "planned_tflop_per_step": round(planned.flops / 1e12, 2),
              "mfu": round(planned.flops / seconds / (peak_tflops * 1e12), 3), "gpu": torch.cuda.get_device_name()}
    del model, optimizer, batch
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu_plan_check.py needs a CUDA GPU")
    import video_llama  # noqa: F401  (registers the built-ins)

    for name in args.settings:
        try:
            print(json.dumps(measure(name, SETTINGS[name], args.steps, args.peak_tflops)), flush=True)
        except torch.OutOfMemoryError as err:
            print(json.dumps({"setting": name, "out_of_memory": str(err).splitlines()[0]}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
