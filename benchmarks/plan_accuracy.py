"""How close ``video-llama plan`` comes to what a real training step holds and computes, on the CPU.

For each shape, one experiment (the tiny recipe's model with an LLM of that shape, random weights,
built from its config.json) is planned on fake tensors, then one real step of the same model on a
batch of the same shape runs under the profiler:

- peak memory: the planner's against the CPU allocator's own record of every allocation and free
  (the profiler's memory events: another mechanism than the planner's storage counting), both
  counting the parameters, the batch and everything the step allocates;
- FLOPs: the planner's count of the LLM's part against an analytic count of its matmuls (linear
  layers, attention's two batched matmuls over the whole sequence, the LM head), forward and
  backward (input gradients always: the loss reaches the video tokens through the LLM; weight
  gradients where the LLM trains).

    .venv/bin/python benchmarks/plan_accuracy.py [--shapes tiny mid mid-checkpointed] [--batch 2]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHAPES = {  # name: (LLM config, options); "tiny" is the quickstart's own LLM (video-llama tiny-llm)
    "tiny": (None, ["model.freeze_llm=False"]),
    "mid": (dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, num_attention_heads=16), []),
    "mid-checkpointed": (dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, num_attention_heads=16),
                         ["model.llm_grad_checkpoint=True"]),
}
BASE_YAML = REPO / "train_configs" / "tiny_cpu_finetune.yaml"


def write_llm_config(folder, shape):
    """An LLM folder with ``shape``'s config.json (no weights: the planner and the measurement build from it)."""
    from transformers import LlamaConfig

    from video_llama.data_tools.tiny_llm import write_tiny_llm

    if shape is None:
        return write_tiny_llm(folder)
    LlamaConfig(**{"vocab_size": 32000, "max_position_embeddings": 2048, **shape}).save_pretrained(folder)
    return folder


def shape_of(config):
    return {key: getattr(config, key) for key in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                  "num_attention_heads", "vocab_size")}


def experiment(llm_folder, options, batch):
    from video_llama.common.config import Config

    return Config.from_file(str(BASE_YAML), [f"model.llama_model={llm_folder}", f"run.batch_size_train={batch}",
                                             f"datasets.webvid_instruct.tokenizer_name={llm_folder}",
                                             "run.amp=False", *options])


def measured_step(cfg, setting):
    """(peak bytes, seconds) of one real CPU training step of ``cfg``'s model with ``setting``: the
    parameters, the batch and the most the step's allocations held at once, from the profiler's
    allocator events."""
    from torch.profiler import ProfilerActivity, profile

    from video_llama.common.registry import registry
    from video_llama.jobs.plan import data_shape, meta_model, model_config, planned_batch
    from video_llama.runners.runner_base import build_optimizer

    torch.manual_seed(0)
    model = meta_model(model_config(cfg, setting), gpu=False, device="cpu").train()  # the planner's model, real
    if model.idle_image_encoders(cfg.datasets_cfg, cfg.run_cfg):  # as the runner does before training
        model.release_frozen_encoders()
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    optimizer = build_optimizer(model, cfg.run_cfg)
    batch = planned_batch(model, data_shape(cfg), setting)
    inputs = [t for t in batch.values() if t is not None]
    resident = sum(t.untyped_storage().nbytes() for t in [*model.parameters(), *model.buffers(), *inputs])
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = task.train_step(model, batch)
        loss.backward()
        del loss
        optimizer.step()
    seconds = time.perf_counter() - start
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return resident + peak, seconds


def decoder_layers_flops(config, batch, seq_len, trains_weights, recomputes):
    """Forward + backward FLOPs of the matmuls of the LLM's decoder layers for ``batch`` sequences of
    ``seq_len`` tokens: the linear layers, and attention's Q·Kᵀ and P·V over the whole sequence.

    Backward: the input gradients of every linear layer (the loss reaches the video tokens through
    the LLM), their weight gradients where the LLM trains, and attention's five matmuls (the fused
    kernel recomputes Q·Kᵀ, then dV, dP, dQ, dK). With gradient checkpointing each layer's forward
    runs again, up to the last tensor its backward needs: all but the MLP's down projection (with
    frozen weights nothing needs its input, and its output only feeds the residual sum)."""
    d, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = d * (config.num_key_value_heads or config.num_attention_heads) // config.num_attention_heads
    tokens = batch * seq_len
    linear = 2 * tokens * (2 * d * d + 2 * d * kv + 3 * d * i)
    attention = 2 * 2 * batch * seq_len * seq_len * d  # two matmuls
    forward = linear + attention
    backward = linear * (2 if trains_weights else 1) + attention * 5 / 2
    recomputed = forward - 2 * tokens * i * d if recomputes and not trains_weights else forward if recomputes else 0
    return layers * (forward + backward + recomputed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    import video_llama  # noqa: F401  (registers the built-ins)
    from video_llama.jobs.plan import data_shape, plan_step, setting_of
    from video_llama.models.llm_shapes import llm_config

    print(f"command: {' '.join(sys.argv)}\nmachine: CPU, {torch.get_num_threads()} threads\n")
    print("| shape | parameters | planned peak MiB | measured peak MiB | planned / measured | planner s | real step s "
          "| decoder layers' GFLOP planned | analytic | planned / analytic |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes:
            shape, options = SHAPES[name]
            folder = write_llm_config(Path(tmp) / name, shape)
            cfg = experiment(folder, options, args.batch)
            setting = setting_of(cfg)
            start = time.perf_counter()
            planned = plan_step(cfg, setting, gpu=False)
            plan_seconds = time.perf_counter() - start
            measured, step_seconds = measured_step(cfg, setting)
            config, _ = llm_config(folder)
            analytic = decoder_layers_flops(config, setting.batch, data_shape(cfg).seq_len,
                                            trains_weights=not cfg.model_cfg.freeze_llm,
                                            recomputes=cfg.model_cfg.llm_grad_checkpoint)
            # the layers' share: the same experiment planned with an LLM of no decoder layers, taken away
            layerless = write_llm_config(Path(tmp) / f"{name}-0", {**shape_of(config), "num_hidden_layers": 0})
            llm = planned.flops - plan_step(experiment(layerless, options, args.batch), setting, gpu=False).flops
            params = planned.parameters / 4  # fp32
            print(f"| {name} | {params / 1e6:,.1f} M | {planned.peak / 2**20:,.1f} | {measured / 2**20:,.1f} "
                  f"| {planned.peak / measured:.3f} | {plan_seconds:.1f} | {step_seconds:.1f} | {llm / 1e9:,.1f} "
                  f"| {analytic / 1e9:,.1f} | {llm / analytic:.4f} |")


if __name__ == "__main__":
    main()
