"""One training step run on fake tensors: the memory it holds at its peak, and its FLOPs.

Why: running out of GPU memory is what users of video-LLM finetuning hit most, and they hit it
after renting the GPU. A fake tensor (PyTorch's FakeTensorMode) has a shape, a dtype and a device
but no data, so the real model code, the real loss and the real optimizer run in seconds on any
machine, a 7B LLM included. What they allocate is counted here as the caching allocator would
hold it: every storage an operation creates is live until the last tensor on it dies.
"""

import dataclasses
import math
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

CUDA_BLOCK = 512  # the CUDA caching allocator hands out multiples of 512 bytes
# torch counts the GPU's attention kernels; the CPU's do the same arithmetic
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda query, key, value, *_, **__: sdpa_flop_count(query, key, value),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad_out, query, key, value, *_, **__: sdpa_backward_flop_count(grad_out, query, key, value),
}


def storage_bytes(storage, block=1):
    """Bytes that ``storage`` takes, rounded up to the allocator's ``block``."""
    return math.ceil(storage.nbytes() / block) * block


class LiveMemory(TorchDispatchMode):
    """Bytes of the tensor storages alive while the mode is active, over all devices: each storage
    an operation returns is counted from then until it is freed. Keeps the peak and, for the
    breakdown, which storages were alive at it.

    ``held``: tensors alive before (the parameters and buffers), counted from the start; ``block``:
    the allocator's granularity (``CUDA_BLOCK`` for a GPU)."""

    def __init__(self, held=(), block=1):
        super().__init__()
        self.block = block
        self.sizes = {}  # id → bytes of each live storage
        self.refs = {}  # id → weak reference to it (its callback forgets it when it is freed)
        self.live = self.peak = 0
        self.at_peak = {}  # id → (weak reference, bytes) of the storages alive at the peak
        for tensor in held:
            self.track(tensor)

    def track(self, tensor):
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.sizes:
            return
        size = storage_bytes(storage, self.block)
        self.sizes[key] = size
        self.refs[key] = weakref.ref(storage, lambda _, key=key: self.release(key))
        self.live += size
        if self.live > self.peak:
            self.peak = self.live
            self.at_peak = {k: (self.refs[k], s) for k, s in self.sizes.items()}

    def release(self, key):
        self.live -= self.sizes.pop(key, 0)
        self.refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        return out

    def transient_at_peak(self, lasting):
        """Bytes at the peak of the storages that did not outlast the step, or are not among
        ``lasting`` (ids: parameters, the batch, gradients, optimizer state): what the forward kept
        for the backward, and temporaries."""
        return sum(size for key, (ref, size) in self.at_peak.items() if ref() is None or key not in lasting)


class CountFlops(TorchDispatchMode):
    """FLOPs of the matmul-like operations run while it is active, by torch's own formulas
    (FlopCounterMode's). Without FlopCounterMode's module tracking: its hooks on module outputs
    keep tensors alive that activation checkpointing frees (a checkpointed step held 10% more)."""

    def __init__(self):
        super().__init__()
        self.formulas = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS).flop_registry
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


@dataclasses.dataclass
class StepPlan:
    """What one training step holds and computes (bytes, FLOPs), per device."""

    parameters: int  # every parameter and buffer, frozen or not
    batch: int  # the batch's tensors on the device
    gradients: int  # the trainable parameters' gradients
    optimizer_state: int  # what the optimizer keeps between steps (AdamW: two moments, a step count)
    activations_at_peak: int  # what the forward kept for the backward, and temporaries, at the peak
    peak: int  # the most held at once
    flops: int  # of the forward and backward (the optimizer's elementwise work is not counted)
    trainable: int  # trainable parameters (count)
    idle: int = 0  # bytes of the parameters that are resident but that the step does not use (the caller says which)
    released: str = ""  # why parameters the step would not use are left off the device (the caller's reason)
    estimated: str = ""  # what the caller changed by estimate rather than simulation (e.g. a quantised LLM)


def storage_ids(tensors):
    return {id(t.untyped_storage()) for t in tensors}


def simulate_step(model, optimizer, batch, loss_fn, block=1):
    """Run one training step of ``model`` (its parameters and ``batch`` fake tensors, made under
    one FakeTensorMode): ``loss_fn(model, batch)`` → loss, backward, ``optimizer.step()``, with
    storages counted in the allocator's ``block``. Returns the :class:`StepPlan`; the gradients are
    set to None afterwards."""
    held = [*model.parameters(), *model.buffers()]
    inputs = [t for t in tree_leaves(batch) if isinstance(t, torch.Tensor)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    with LiveMemory(held + inputs, block) as memory:
        with CountFlops() as flops:
            loss = loss_fn(model, batch)
            loss.backward()
            del loss
        optimizer.step()
    state = [t for values in optimizer.state.values() for t in values.values() if isinstance(t, torch.Tensor)]
    parts = {"parameters": storage_ids(held), "batch": storage_ids(inputs),
             "gradients": storage_ids(p.grad for p in trainable if p.grad is not None),
             "optimizer state": storage_ids(state)}
    size = {name: sum(memory.sizes.get(key, 0) for key in keys) for name, keys in parts.items()}
    plan = StepPlan(
        parameters=size["parameters"], batch=size["batch"], gradients=size["gradients"],
        optimizer_state=size["optimizer state"], activations_at_peak=memory.transient_at_peak(set().union(*parts.values())),
        peak=memory.peak, flops=flops.total, trainable=sum(p.numel() for p in trainable),
    )
    optimizer.zero_grad(set_to_none=True)
    return plan
