"""Small helpers shared across the package."""

import random

import numpy as np
import torch


def seed_everything(seed):
    """Seed Python's, NumPy's and torch's global generators."""
    seed = seed % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
