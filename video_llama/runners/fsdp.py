"""``run.strategy: fsdp``: parameters, gradients and optimizer state sharded over the processes with
torch's FSDP2 (``fully_shard``), for models whose frozen LLM does not fit once per GPU.

The model names its units (``fsdp_units``: each LLM decoder layer, ...) and the methods besides
``forward`` that run them (``fsdp_forward_methods``: ``score``, ``generate``). Checkpoints stay
those of a plain model: the trainable weights and the optimizer state are gathered whole
(every rank takes part; rank 0 writes them) and sharded again on resume, so a run saved under
one strategy resumes under the other and loads into a model built without FSDP.
"""

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def shard_model(model):
    """Shard ``model`` in place: its units innermost first, then the model itself. Each rank keeps
    its slice of its own copy, so rank 0's copy goes to all first (random initialisation is seeded
    per rank; DDP does the same broadcast)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)
    for unit in model.fsdp_units():
        fully_shard(unit)
    fully_shard(model)
    for module, method in model.fsdp_forward_methods():
        register_fsdp_forward_method(module, method)
    return model


def full(tensor):
    """A sharded tensor gathered whole (a collective); any other tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def gathered_state(state):
    """{name: tensor}, sharded ones gathered whole. Every rank must call it, in the same order."""
    return {name: full(tensor) for name, tensor in state.items()}


def gathered_optimizer_state(optimizer):
    """``optimizer.state_dict()`` with its sharded moments gathered whole (a plain optimizer's state)."""
    state = optimizer.state_dict()
    return {**state, "state": {index: gathered_state(entry) for index, entry in state["state"].items()}}


def load_optimizer_state(optimizer, state):
    """Load a plain optimizer state (``gathered_optimizer_state`` or a DDP run's) into ``optimizer``,
    whose parameters may be sharded: each moment is sharded like its parameter first."""
    params = [param for group in optimizer.param_groups for param in group["params"]]

    def like(param, value):
        if isinstance(param, DTensor) and torch.is_tensor(value) and value.shape == param.shape:
            return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
        return value

    entries = {index: {key: like(params[int(index)], value) for key, value in entry.items()}
               for index, entry in state["state"].items()}
    optimizer.load_state_dict({**state, "state": entries})
