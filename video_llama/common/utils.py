"""Small helpers shared across the package."""

import contextlib
import random

import numpy as np
import torch


def seed_everything(seed, cuda=True):
    """Seed Python's, NumPy's and torch's global generators. ``cuda=False`` seeds CUDA's only when
    CUDA has started: before that torch queues the seed for whenever it starts (outliving a
    :func:`seeded` block) and records a stack trace each time, half of a per-sample seeding."""
    seed = seed % 2**32
    random.seed(seed)
    np.random.seed(seed)
    if cuda or torch.cuda.is_initialized():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def preserved_rng():
    """Run a block without disturbing the global generators (Python's, NumPy's, torch's CPU and
    CUDA): what it draws is drawn again after it. Evaluation and per-sample seeding use it, so
    that dropout in training draws the same numbers however often they run."""
    python, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def seeded(seed):
    """The global generators seeded with ``seed`` inside the block, restored after it."""
    with preserved_rng():
        seed_everything(seed, cuda=False)
        yield


def rng_state():
    """This process's RNG states, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_local_spec(spec):
    """Whether a data location (a shard pattern, say) names local files rather than a URL or a
    ``pipe:`` command, which are passed on as written."""
    return "://" not in spec and not spec.startswith("pipe:")
