"""What ``video-llama plan`` does: the memory and FLOPs of one training step of an experiment, for
the YAML as written and for what a user may change, before any GPU is rented.

The experiment's own model is built on fake tensors (shapes and dtypes, no data, no weights: the
LLM from its config.json, or the published shape its name says), and one step of the task's real
loss, backward and the runner's optimizer runs on a batch of the recipe's shape (the longest
sequence the data may make): :mod:`video_llama.runners.step_plan` counts what it holds.
"""

import dataclasses
import logging

import torch
from omegaconf import OmegaConf

from video_llama.common.errors import UserError
from video_llama.common.registry import registry
from video_llama.conversation import IGNORE_INDEX
from video_llama.models.llm_shapes import llm_config
from video_llama.runners.runner_base import autocast_rule, build_optimizer
from video_llama.runners.step_plan import CUDA_BLOCK, simulate_step

logger = logging.getLogger(__name__)
GIB = 1024 ** 3
ANSWER_TOKENS = 32  # answer tokens of a planned sample (the loss's share of the work; the logits are there for every token)


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a user may change for memory; one point of the planner's grid."""

    frames: int  # per clip
    batch: int  # per GPU (run.batch_size_train)
    lora_r: int = 0  # model.lora.r (0: no adapters)
    llm_grad_checkpoint: bool = False
    attn_implementation: str = "sdpa"
    features: bool = False  # from a feature cache: the frozen ViT and image Q-Former do not run
    low_bit: int = 0  # the frozen LLM loaded in 8 or 4 bits (model.llm_load_in_8bit / 4bit); 0: in llama_dtype
    fsdp_gpus: int = 1  # sharded over this many GPUs (run.strategy: fsdp)

    def options(self, cfg):
        """The ``--options`` that turn the experiment ``cfg`` into this setting (only what
        differs), keeping its effective batch (``batch_size_train`` × ``accum_grad_iters``)."""
        run, written = cfg.run_cfg, setting_of(cfg)
        options = []
        if self.batch != written.batch:  # a divisor of the batch: the same samples per step, epoch and warmup
            more = written.batch // self.batch
            options += [f"run.batch_size_train={self.batch}", f"run.accum_grad_iters={run.accum_grad_iters * more}",
                        f"run.warmup_steps={run.warmup_steps * more}"]
            if run.iters_per_epoch:
                options.append(f"run.iters_per_epoch={run.iters_per_epoch * more}")
        if self.frames != written.frames:
            options += [f"datasets.{name}.vis_processor.{split}.n_frms={self.frames}"
                        for name, dataset in cfg.datasets_cfg.items() for split in ("train", "eval")
                        if (dataset.get("vis_processor") or {}).get(split) is not None]
        for key, field in (("llm_grad_checkpoint", "llm_grad_checkpoint"), ("lora.r", "lora_r"),
                           ("attn_implementation", "attn_implementation")):
            if getattr(self, field) != getattr(written, field):
                options.append(f"model.{key}={getattr(self, field)}")
        if self.low_bit != written.low_bit:
            options += [f"model.llm_load_in_8bit={self.low_bit == 8}", f"model.llm_load_in_4bit={self.low_bit == 4}"]
        return options

    def describe(self):
        memory = [f"LoRA r={self.lora_r}" if self.lora_r else "no LoRA",
                  "LLM checkpointing" if self.llm_grad_checkpoint else "no checkpointing", self.attn_implementation,
                  *(["cached features (no ViT, no image Q-Former)"] if self.features else []),
                  *([f"{self.low_bit}-bit LLM"] if self.low_bit else []),
                  *([f"FSDP over {self.fsdp_gpus} GPUs"] if self.fsdp_gpus > 1 else [])]
        return f"{self.frames} frames × batch {self.batch}, " + ", ".join(memory)


def setting_of(cfg):
    """The :class:`Setting` the experiment ``cfg`` (a :class:`~video_llama.common.config.Config`) is written with."""
    model, run = cfg.model_cfg, cfg.run_cfg
    cached = all(dataset.get("feature_cache") for dataset in cfg.datasets_cfg.values())  # as the runner releases
    return Setting(frames=data_shape(cfg).frames, batch=run.batch_size_train, lora_r=int((model.get("lora") or {}).get("r") or 0),
                   llm_grad_checkpoint=bool(model.llm_grad_checkpoint), attn_implementation=model.attn_implementation,
                   features=bool(cfg.datasets_cfg) and cached,
                   low_bit=8 if model.get("llm_load_in_8bit") else 4 if model.get("llm_load_in_4bit") else 0)


@dataclasses.dataclass(frozen=True)
class DataShape:
    frames: int  # per clip (1: images)
    image_size: int
    seq_len: int  # tokens of the longest sample the data may make


CAPTION_PROMPT_TOKENS = 64  # room for the prompt around a caption (template and instruction), generously


def data_shape(cfg):
    """The largest sample any of the experiment's datasets may make: the most frames, the largest
    image side and the longest token sequence among them (a batch comes from one dataset; the plan
    takes the worst)."""
    frames, size, seq_len = 1, 0, 0
    model = cfg.model_cfg
    for dataset in cfg.datasets_cfg.values():
        processor = ((dataset.get("vis_processor") or {}).get("train") or {})
        frames = max(frames, int(processor.get("n_frms") or 1))
        size = max(size, int(processor.get("image_size") or model.img_size))
        caption = int(dataset.get("max_txt_len") or model.max_txt_len) + model.num_visual_tokens + CAPTION_PROMPT_TOKENS
        seq_len = max(seq_len, int(dataset.get("max_seq_len") or caption))
    return DataShape(frames, size or model.img_size, seq_len)


def model_config(cfg, setting):
    """The ``model:`` section with ``setting``'s memory keys."""
    model = OmegaConf.create(OmegaConf.to_container(cfg.model_cfg, resolve=True))
    model.lora = {**(model.get("lora") or {}), "r": setting.lora_r}
    model.llm_grad_checkpoint = setting.llm_grad_checkpoint
    # FlashAttention-2 (a CUDA package) holds what sdpa's fused kernels hold: planned as sdpa
    model.attn_implementation = "sdpa" if setting.attn_implementation == "flash_attention_2" else setting.attn_implementation
    model.vit_ckpt = model.q_former_model = model.ckpt = None  # shapes only: no file is read
    return model


def meta_model(model_cfg, gpu, device="meta"):
    """The experiment's model with an LLM made from its configuration, on the meta device:
    shapes and dtypes (those of a GPU run when ``gpu``), nothing initialised, nothing allocated.
    On another ``device``, with random weights (what the benchmarks measure)."""
    config, source = llm_config(model_cfg.llama_model)
    logger.info("planning with the LLM shape of %s", source)
    model_cls = registry.get_model_class(model_cfg.arch)
    if not hasattr(model_cls, "from_llm_config"):
        raise UserError(f"model.arch {model_cfg.arch!r} ({model_cls.__name__}) cannot be planned: the planner builds a model "
                        "with from_llm_config(cfg, llm_config, on_cuda), as VideoLLAMA does; give the class one")
    with torch.device(device):
        return model_cls.from_llm_config(model_cfg, config, on_cuda=gpu)


def fake_model(model_cfg, gpu, fake_mode):
    """The experiment's model with fake parameters (on the CPU, in the dtypes of a GPU run when
    ``gpu``), in training mode."""
    model = meta_model(model_cfg, gpu)
    with fake_mode:
        model = model.to_empty(device="cpu")
    return model.train()


def planned_batch(model, data, setting):
    """A batch as the data loader delivers it, of the longest samples: ``setting.batch`` clips of
    ``setting.frames`` frames, each sample ``data.seq_len`` tokens with the video placeholders and
    an answer at the end. Fake tensors under a FakeTensorMode, else real ones (for measuring).
    Every sample is as long as the longest, so there is no padding mask: given one of all ones,
    the LLM reads it and drops it, which it cannot do with a fake one (it would keep a mask)."""
    batch, length, placeholders = setting.batch, data.seq_len, model.num_visual_tokens
    ids = torch.zeros(batch, length, dtype=torch.long)
    ids[:, 1:1 + placeholders] = model.im_patch_token_id
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -ANSWER_TOKENS:] = 1
    if setting.features:  # what a feature cache holds: the image Q-Former's output per frame, fp16
        cfg = model.cfg
        visual = {"frame_features": torch.zeros(batch, setting.frames, cfg.num_query_token, cfg.qformer_hidden_size,
                                                dtype=torch.float16)}
    else:
        visual = {"image": torch.zeros(batch, 3, setting.frames, data.image_size, data.image_size)}
    return {**visual, "input_ids": ids, "labels": labels, "attention_mask": None}


def plan_step(cfg, setting, gpu=True):
    """The :class:`~video_llama.runners.step_plan.StepPlan` of one training step of ``cfg`` with
    ``setting``, on a GPU (``gpu``) or on the CPU.

    A GPU is simulated on fake CPU tensors with CUDA's rules (the ViT in ``vit_precision``, the
    allocator's 512-byte blocks, the optimizer's foreach kernels): PyTorch's backward engine wants
    a real GPU for CUDA tensors, fake or not. ``run.amp`` is simulated on the CPU only: CPU
    autocast refuses the fp16 ViT's tensors, and CUDA's cannot run here. Without it the trainable
    fp32 modules keep fp32 activations where a GPU would keep half of that (they are small beside
    the LLM's, which are in ``llama_dtype`` either way), so a GPU plan errs on the high side."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    run = cfg.run_cfg
    task = registry.get_task_class(run.task).setup_task(cfg)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)  # to_empty reads the meta parameters
    model = fake_model(model_config(cfg, setting), gpu, fake_mode)
    dtype, amp, _ = autocast_rule(run, "cuda" if gpu else "cpu")
    amp = amp and not gpu  # a GPU run's autocast is not simulated (see above)
    with fake_mode:
        optimizer = build_optimizer(model, run, device_type="cuda" if gpu else "cpu")
        batch = planned_batch(model, data_shape(cfg), setting)

        def loss_fn(model, batch):
            with torch.autocast("cpu", dtype=dtype, enabled=amp):
                return task.train_step(model, batch)

        step = simulate_step(model, optimizer, batch, loss_fn, block=CUDA_BLOCK if gpu else 1)
    released = model.idle_image_encoders(cfg.datasets_cfg, run)  # as the runner decides (RunnerBase)
    if setting.features or model.frame_branches == ("audio",):  # the step does not run the ViT and image Q-Former
        idle = sum(t.numel() * t.element_size() for _, t in model.frozen_encoder_tensors())
        if not released:  # kept only to evaluate (from pixels, or with sound)
            step = dataclasses.replace(step, idle=idle)
        else:  # released before training (RunnerBase): untouched by the step, so exactly their bytes less
            step = dataclasses.replace(step, parameters=step.parameters - idle, peak=step.peak - idle, released=released)
    if setting.low_bit or setting.fsdp_gpus > 1:
        if released:  # as the runner does before training: the estimates then leave them out
            model.release_frozen_encoders()
        shapes = shapes_of(model)  # the simulated model itself: no second build
        if setting.low_bit:
            saved = shapes.llm_linear_bytes - int(shapes.llm_linear_weights * LOW_BIT_BYTES[setting.low_bit])
            step = dataclasses.replace(step, peak=low_bit_estimate(step, shapes, setting.low_bit),
                                       parameters=step.parameters - saved,
                                       estimated=f"the LLM's linear weights in {setting.low_bit} bits (bitsandbytes' sizes)")
        if setting.fsdp_gpus > 1:
            note = f"sharded over {setting.fsdp_gpus} GPUs (FSDP)"
            step = dataclasses.replace(step, peak=fsdp_estimate(step, shapes, setting.fsdp_gpus),
                                       estimated="; ".join(filter(None, [step.estimated, note])))
    return step


# bytes a weight of a quantised linear layer takes (bitsandbytes): LLM.int8 keeps one fp32 scale per
# row beside the int8 weights; NF4 with double quantisation one 8-bit absmax per 64 weights and one
# fp32 constant per 256 of those
LOW_BIT_BYTES = {8: 1.0, 4: 0.5 + 1 / 64 + 4 / (64 * 256)}


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What the estimates below need of the model's parameters (bytes in their dtypes)."""

    llm_linear_weights: int  # weights of the LLM decoder layers' linear layers (what bitsandbytes quantises)
    llm_linear_bytes: int
    largest_linear_bytes: int  # one such weight, dequantised for its matmul
    units: list  # the FSDP units' own parameter bytes, the model's rest last


def shapes_of(model):
    """:class:`Shapes` of a built model (meta or fake tensors: only shapes and dtypes are read)."""
    layers = model.llama_model.get_decoder().layers
    linear = [m.weight for name, m in layers.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in name]
    nbytes = [w.numel() * w.element_size() for w in linear]
    seen, units = set(), []
    for unit in [*model.fsdp_units(), model]:
        own = [p for p in unit.parameters() if id(p) not in seen]
        seen.update(id(p) for p in own)
        units.append(sum(p.numel() * p.element_size() for p in own))
    return Shapes(sum(w.numel() for w in linear), sum(nbytes), max(nbytes, default=0), units)


def low_bit_estimate(step, shapes, bits):
    """The peak of ``step`` (planned with the LLM in ``llama_dtype``) with its decoder layers' linear
    weights quantised to ``bits`` (8 or 4), estimated: those weights at bitsandbytes' size, plus one
    of them dequantised at a time for its matmul. (bitsandbytes needs a GPU: not simulated.)"""
    quantised = shapes.llm_linear_weights * LOW_BIT_BYTES[bits]
    return step.peak - shapes.llm_linear_bytes + int(quantised) + shapes.largest_linear_bytes


def fsdp_estimate(step, shapes, gpus):
    """The per-GPU peak of ``step`` sharded with FSDP over ``gpus`` GPUs (``run.strategy: fsdp``),
    estimated: parameters, gradients and optimizer state split ``gpus`` ways, plus the two largest
    units gathered whole at once (the one running and the one fetched ahead) and the model's rest,
    gathered for the whole step. (The plan is of one unsharded GPU: not simulated.)"""
    sharded = step.parameters + step.gradients + step.optimizer_state
    *inner, rest = shapes.units
    gathered = sum(sorted(inner, reverse=True)[:2]) + rest
    return int(step.peak - sharded + sharded / gpus + gathered * (1 - 1 / gpus))


def parse_bytes(text):
    """"24GiB", "24 GB", "80G", "512MiB" → bytes (GB and G are taken as GiB, as GPU specs mean)."""
    units = {"": GIB, "g": GIB, "gb": GIB, "gib": GIB, "m": 2 ** 20, "mb": 2 ** 20, "mib": 2 ** 20, "t": 2 ** 40, "tb": 2 ** 40, "tib": 2 ** 40}
    value = str(text).strip().lower().replace(" ", "")
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    try:
        return int(float(number) * units[value[len(number):]])
    except (ValueError, KeyError):
        raise UserError(f"--gpu-memory {text!r}: give a size such as 24GiB, 80GB or 40960MiB") from None


MARGIN = 0.10  # of a GPU's memory left free: the allocator's fragmentation, CUDA's context, kernels' workspaces
GPU_TFLOPS = {"A100": 312, "H100": 989}  # dense bf16 peak per GPU (the vendors' specifications), for samples/s at an MFU


def fits(plan, gpu_memory):
    """Whether ``plan``'s peak leaves ``MARGIN`` of ``gpu_memory`` bytes free."""
    return plan.peak <= (1 - MARGIN) * gpu_memory


def report(cfg_path, setting, plan, gpu=True, mfu=0.4, llm_source=None):
    """The plan as a user reads it: where the memory goes and what a step computes."""
    data_where = "one GPU (simulated)" if gpu else "the CPU"
    if llm_source:
        data_where += f"; the LLM shaped as {llm_source}"
    rows = [("parameters and buffers (frozen and trainable)", plan.parameters), ("the batch", plan.batch),
            ("gradients", plan.gradients), ("optimizer state", plan.optimizer_state),
            ("activations and temporaries at the peak", plan.activations_at_peak), ("**peak**", plan.peak)]
    estimated = [f"estimated, not simulated: {plan.estimated}", ""] if plan.estimated else []
    lines = [f"one training step of {cfg_path} on {data_where}: {setting.describe()}", "", *estimated,
             "| memory | GiB |", "| --- | ---: |", *(f"| {name} | {size / GIB:.2f} |" for name, size in rows), ""]
    if plan.idle:
        lines += [f"of the parameters, {plan.idle / GIB:.2f} GiB are the frozen ViT and image Q-Former, idle while training "
                  "(a feature cache stands for them, or the frames feed the audio branch), kept on the GPU to evaluate "
                  f"(from pixels, or with sound): without that the peak is {(plan.peak - plan.idle) / GIB:.2f} GiB", ""]
    elif plan.released:
        lines += [f"the frozen ViT and image Q-Former are not on the GPU: {plan.released}", ""]
    per_sample = plan.flops / setting.batch
    lines.append(f"trainable parameters: {plan.trainable / 1e6:,.1f} M; one step: {plan.flops / 1e12:,.2f} TFLOP "
                 f"(forward and backward, {per_sample / 1e12:,.2f} a sample)")
    if gpu:
        lines.append("samples/s at {:.0%} MFU: ".format(mfu) + ", ".join(
            f"{name} {mfu * tflops * 1e12 / per_sample:,.1f}" for name, tflops in GPU_TFLOPS.items()))
    return "\n".join(lines)


def cheaper_settings(setting):
    """What to try, in order, when ``setting`` does not fit: recompute the LLM's layers in backward,
    then smaller batches (divisors of it, accumulated to the same samples per optimizer step, epoch
    and warmup: :meth:`Setting.options`) down to one, then halve the frames: the first keep the
    recipe's results, the last changes what the model sees."""
    candidates = []
    if not setting.llm_grad_checkpoint:
        candidates.append(dataclasses.replace(setting, llm_grad_checkpoint=True))
    for batch in sorted((b for b in range(1, setting.batch) if setting.batch % b == 0), reverse=True):
        candidates.append(dataclasses.replace(setting, batch=batch, llm_grad_checkpoint=True))
    frames = setting.frames
    while frames > 4:
        frames //= 2
        candidates.append(dataclasses.replace(setting, batch=1, frames=frames, llm_grad_checkpoint=True))
    return candidates


def first_that_fits(cfg, setting, gpu_memory, gpu=True):
    """(setting, plan) of the first of :func:`cheaper_settings` whose step fits ``gpu_memory``, or None."""
    for candidate in cheaper_settings(setting):
        step = plan_step(cfg, candidate, gpu=gpu)
        if fits(step, gpu_memory):
            return candidate, step
    return None


def largest_batch(cfg, setting, step, gpu_memory, gpu=True, doubled=None):
    """(batch, plan): the most samples a step of ``setting`` (whose plan is ``step``, which fits)
    fits in ``gpu_memory``. Memory grows about linearly with the batch: two plans give the line
    (``doubled``: the plan at twice the batch, when the caller has it), a third checks the batch
    it predicts; where that one does not fit, a bisection between it and ``setting.batch`` (the
    line promises too many at large batches: a 4-bit row of the 7B grid predicted 57 where 42
    fit, which a walk down one batch at a time took 15 plans to find)."""
    doubled = doubled or plan_step(cfg, dataclasses.replace(setting, batch=setting.batch * 2), gpu=gpu)
    slope = (doubled.peak - step.peak) / setting.batch
    planned = {setting.batch: step, 2 * setting.batch: doubled}

    def plan_at(batch):
        if batch not in planned:
            planned[batch] = plan_step(cfg, dataclasses.replace(setting, batch=batch), gpu=gpu)
        return planned[batch]

    low = setting.batch  # fits
    high = max(low, setting.batch + int(((1 - MARGIN) * gpu_memory - step.peak) // max(slope, 1)))
    if fits(plan_at(high), gpu_memory):
        return high, planned[high]
    while high - low > 1:  # low fits, high does not
        middle = (low + high) // 2
        low, high = (middle, high) if fits(plan_at(middle), gpu_memory) else (low, middle)
    return low, planned[low]


def memory_advice(cfg, setting, step, gpu_memory, gpu=True):
    """Lines on whether ``step`` (the plan of ``setting``) fits ``gpu_memory`` and what to change."""
    room = (1 - MARGIN) * gpu_memory
    if fits(step, gpu_memory):
        batch, planned = largest_batch(cfg, setting, step, gpu_memory, gpu=gpu)
        return [f"fits in {gpu_memory / GIB:.1f} GiB ({room / GIB:.1f} GiB usable, {MARGIN:.0%} kept free): "
                f"{(room - step.peak) / GIB:.2f} GiB to spare; the most samples a step fits at these settings: "
                f"run.batch_size_train={batch} (peak {planned.peak / GIB:.2f} GiB)"]
    lines = [f"does NOT fit in {gpu_memory / GIB:.1f} GiB ({room / GIB:.1f} GiB usable, {MARGIN:.0%} kept free): "
             f"the peak is {(step.peak - room) / GIB:.2f} GiB over"]
    found = first_that_fits(cfg, setting, gpu_memory, gpu=gpu)
    if found is None:
        lines.append("nothing the planner tries fits (LLM checkpointing, batch 1, 4 frames): load the LLM in 8 or 4 "
                     "bits (model.llm_load_in_8bit / llm_load_in_4bit), shard it over GPUs (run.strategy: fsdp), "
                     "or take a GPU with more memory")
    else:
        cheaper, planned = found
        lines.append(f"fits with --options {' '.join(cheaper.options(cfg))} ({cheaper.describe()}; "
                     f"peak {planned.peak / GIB:.2f} GiB)")
    return lines


def startup_memory_check(cfg, gpu_memory):
    """At the start of training on a GPU of ``gpu_memory`` bytes: plan one step and, when it will
    not fit, log a warning with the settings that would. Returns the warning, or None."""
    setting = setting_of(cfg)
    step = plan_step(cfg, setting, gpu=True)
    if fits(step, gpu_memory):
        logger.info("memory plan: a step of %s peaks at %.2f GiB of the GPU's %.1f GiB", setting.describe(),
                    step.peak / GIB, gpu_memory / GIB)
        return None
    warning = "\n  ".join(["memory plan (run.memory_check): this run will probably run out of GPU memory",
                           *memory_advice(cfg, setting, step, gpu_memory)])
    logger.warning(warning)
    return warning


GRID_FRAMES = (8, 16, 32)


def grid(cfg, gpu_memory, gpu=True, frames=GRID_FRAMES, lora_r=8):
    """Markdown lines: for each frame count and each memory setting (the YAML's, with LLM
    checkpointing, with LoRA of rank ``lora_r``, both), the peak of one sample, what each more
    sample adds, and the most samples a step fits in ``gpu_memory``."""
    base = setting_of(cfg)
    memory = {"as written": {}, "LLM checkpointing": {"llm_grad_checkpoint": True},
              f"LoRA r={lora_r}": {"lora_r": lora_r}, f"LoRA r={lora_r}, checkpointing": {"lora_r": lora_r, "llm_grad_checkpoint": True},
              f"8-bit LLM, LoRA r={lora_r}, checkpointing (estimated)": {"lora_r": lora_r, "llm_grad_checkpoint": True, "low_bit": 8},
              f"4-bit LLM, LoRA r={lora_r}, checkpointing (estimated)": {"lora_r": lora_r, "llm_grad_checkpoint": True, "low_bit": 4}}
    lines = [f"| frames | settings | peak at batch 1 GiB | each more sample GiB | most samples in {gpu_memory / GIB:.1f} GiB |",
             "| ---: | --- | ---: | ---: | ---: |"]
    for count in frames:
        for name, change in memory.items():
            one = dataclasses.replace(base, frames=count, batch=1, **change)
            step = plan_step(cfg, one, gpu=gpu)
            two = plan_step(cfg, dataclasses.replace(one, batch=2), gpu=gpu)
            if fits(step, gpu_memory):
                most = str(largest_batch(cfg, one, step, gpu_memory, gpu=gpu, doubled=two)[0])
            else:
                most = "none"
            lines.append(f"| {count} | {name} | {step.peak / GIB:.3f} | {(two.peak - step.peak) / GIB:.3f} | {most} |")
    return lines


def plan(cfg, cfg_path, gpu=True, gpu_memory=None, gpus=1):
    """Plan the experiment ``cfg`` (read from ``cfg_path``) as written, per GPU of ``gpus``;
    returns (setting, plan, the report)."""
    setting = setting_of(cfg)
    sharded = gpus > 1 and cfg.run_cfg.strategy == "fsdp"
    if sharded:
        setting = dataclasses.replace(setting, fsdp_gpus=gpus)
    step = plan_step(cfg, setting, gpu=gpu)
    text = report(cfg_path, setting, step, gpu=gpu, llm_source=llm_config(cfg.model_cfg.llama_model)[1])
    if gpus > 1 and not sharded:
        text += (f"\nwith run.strategy={cfg.run_cfg.strategy} each of the {gpus} GPUs holds all of this "
                 "(--options run.strategy=fsdp shards it)")
    if gpu_memory:
        text += "\n" + "\n".join(memory_advice(cfg, setting, step, gpu_memory, gpu=gpu))
    return setting, step, text
