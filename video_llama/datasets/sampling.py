"""Deterministic, resumable batches for training, mixed over datasets by ``sample_ratio``.

Every batch is a function of (seed, epoch, step, rank) alone, so a run resumed mid-epoch sees
exactly the batches, and the augmentation seeds, that the uninterrupted run saw:

* each step draws one dataset with probability ∝ its ``sample_ratio`` (all ranks draw the same);
* each dataset is read as an endless stream of shuffled passes; a pass's permutation is shared by
  all ranks and each rank takes its own slice (``perm[rank::world_size]``), so ranks see different
  samples and the same number of steps; when a pass is used up the stream wraps into the next
  shuffled pass (the loader "cycles" and reshuffles on its own);
* every sample carries its own augmentation seed, so which worker decodes it does not matter.
"""

import numpy as np
from torch.utils.data import Dataset


class MixedDataset(Dataset):
    """Several datasets behind one index space: keys are ``(dataset_id, index, seed)``."""

    def __init__(self, datasets):
        self.datasets = list(datasets)

    def __len__(self):
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key):
        dataset_id, index, seed = key
        return self.datasets[dataset_id][(index, seed)]


class MixingBatchSampler:
    def __init__(self, sizes, ratios, batch_size, seed=0, rank=0, world_size=1, iters_per_epoch=None):
        if any(size < 1 for size in sizes):
            raise ValueError(f"every training dataset needs at least one sample; sizes: {sizes}")
        self.sizes, self.batch_size, self.seed = list(sizes), batch_size, seed
        self.rank, self.world_size = rank, world_size
        total = float(sum(ratios))
        self.probs = np.array([r / total for r in ratios])
        # per rank, a pass over dataset d has ceil(size / world_size) samples (the tail wraps)
        self.shard_sizes = [-(-size // world_size) for size in self.sizes]
        one_pass = sum(max(1, n // batch_size) for n in self.shard_sizes)
        self.iters_per_epoch = iters_per_epoch or one_pass
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch, start_step=0):
        self.epoch, self.start_step = epoch, start_step

    def __len__(self):
        return self.iters_per_epoch - self.start_step

    def _choices(self, epoch):
        if len(self.sizes) == 1:
            return np.zeros(self.iters_per_epoch, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch, 7])
        return rng.choice(len(self.sizes), size=self.iters_per_epoch, p=self.probs)

    def _stream(self, dataset_id, position):
        """The sample at ``position`` of this rank's endless stream over a dataset."""
        shard = self.shard_sizes[dataset_id]
        pass_id, offset = divmod(position, shard)
        perm = np.random.default_rng([self.seed, dataset_id, pass_id]).permutation(self.sizes[dataset_id])
        return int(perm[(offset * self.world_size + self.rank) % self.sizes[dataset_id]])

    def __iter__(self):
        # batches drawn from each dataset in the epochs before this one
        drawn = np.zeros(len(self.sizes), dtype=np.int64)
        for epoch in range(self.epoch):
            drawn += np.bincount(self._choices(epoch), minlength=len(self.sizes))
        choices = self._choices(self.epoch)
        for step in range(self.iters_per_epoch):
            dataset_id = int(choices[step])
            if step >= self.start_step:
                first = int(drawn[dataset_id]) * self.batch_size
                seeds = np.random.SeedSequence([self.seed, self.rank, self.epoch, step]).generate_state(self.batch_size)
                yield [(dataset_id, self._stream(dataset_id, first + j), int(seeds[j])) for j in range(self.batch_size)]
            drawn[dataset_id] += 1
