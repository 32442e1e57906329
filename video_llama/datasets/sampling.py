"""Deterministic, resumable batches for training, mixed over datasets by ``sample_ratio``.

Every batch is a function of (seed, epoch, step, rank) alone, so a run resumed mid-epoch sees
exactly the batches, and the augmentation seeds, that the uninterrupted run saw:

* each step draws one dataset with probability ∝ its ``sample_ratio`` (all ranks draw the same);
* each dataset is read as an endless stream of shuffled passes; a pass's permutation is shared by
  all ranks and each rank takes its own slice (``perm[rank::world_size]``), so ranks see different
  samples and the same number of steps; when a pass is used up the stream wraps into the next
  shuffled pass (the loader "cycles" and reshuffles on its own);
* every sample carries its own augmentation seed, a function of its place in the dataset's global
  stream (not of the rank or the batch), so which worker decodes it does not matter, and 2 ranks ×
  batch 2 read and augment exactly what 1 rank × batch 4 does.

Each pass's permutation is computed once and kept while the stream is in it: a batch costs
O(batch size), whatever the dataset's size (``benchmarks/sampler.py``).

A dataset read from shards (``streams``) cannot be indexed at random; its batches are read from
the endless stream of one *consumer*, a function of the rank and the global step modulo
``num_workers`` (the DataLoader hands batches to its workers in turn, so each worker keeps
reading one stream), at the place that consumer's earlier batches from it reached (see
``datasets/datasets/shard_dataset.py``). Then a function of (seed, epoch, step, rank,
num_workers): resume such a run with the same ``run.num_workers``.
"""

import numpy as np
from torch.utils.data import Dataset

from video_llama.common.utils import seeded
from video_llama.datasets.datasets.shard_dataset import StreamId


class MixedDataset(Dataset):
    """Several datasets behind one index space: keys are ``(dataset_id, index, seed)``.

    The datasets are plain ``torch.utils.data.Dataset`` objects indexed by int; the seed is applied
    here, to the global generators around the item's loading, so a dataset (or processor) that
    draws from ``random``, NumPy or torch is reproducible without knowing about seeds.
    """

    def __init__(self, datasets):
        self.datasets = list(datasets)

    def __len__(self):
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key):
        dataset_id, index, seed = key
        with seeded(seed):
            if isinstance(index, tuple):  # (StreamId, position) of a dataset read from shards
                return self.datasets[dataset_id].stream_item(*index)
            return self.datasets[dataset_id][index]


class MixingBatchSampler:
    def __init__(self, sizes, ratios, batch_size, seed=0, rank=0, world_size=1, iters_per_epoch=None,
                 streams=(), num_workers=0):
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
        self._perms = {}  # dataset_id → (pass_id, permutation of that pass)
        self.streams = set(i for i, is_stream in enumerate(streams) if is_stream)
        self.workers = max(1, num_workers)  # consumers per rank of a stream dataset

    def set_epoch(self, epoch, start_step=0):
        self.epoch, self.start_step = epoch, start_step

    def __len__(self):
        return self.iters_per_epoch - self.start_step

    def _choices(self, epoch):
        if len(self.sizes) == 1:
            return np.zeros(self.iters_per_epoch, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch, 7])
        return rng.choice(len(self.sizes), size=self.iters_per_epoch, p=self.probs)

    def _permutation(self, dataset_id, pass_id):
        cached = self._perms.get(dataset_id)
        if cached is None or cached[0] != pass_id:
            perm = np.random.default_rng([self.seed, dataset_id, pass_id]).permutation(self.sizes[dataset_id])
            self._perms[dataset_id] = cached = (pass_id, perm)
        return cached[1]

    def _stream(self, dataset_id, position):
        """(index, seed) of the sample at ``position`` of this rank's endless stream over a dataset."""
        shard = self.shard_sizes[dataset_id]
        pass_id, offset = divmod(position, shard)
        slot = offset * self.world_size + self.rank  # the place in the pass, counted over all ranks
        index = int(self._permutation(dataset_id, pass_id)[slot % self.sizes[dataset_id]])
        seed = int(np.random.SeedSequence([self.seed, dataset_id, pass_id, slot]).generate_state(1)[0])
        return index, seed

    def _workers(self, epoch, choices):
        """Per step of ``epoch``: the worker whose consumer reads it (0 for datasets that are no stream)."""
        steps = np.arange(epoch * self.iters_per_epoch, (epoch + 1) * self.iters_per_epoch)
        return np.where(np.isin(choices, list(self.streams)), steps % self.workers, 0)

    def _consumer_item(self, dataset_id, worker, position):
        stream = StreamId(self.rank * self.workers + worker, self.world_size * self.workers, self.seed)
        seed = int(np.random.SeedSequence([self.seed, dataset_id, stream.consumer, position, 1]).generate_state(1)[0])
        return (stream, position), seed

    def __iter__(self):
        # batches drawn from each dataset (by each worker's consumer, for streams) before this epoch
        drawn = np.zeros((len(self.sizes), self.workers), dtype=np.int64)
        for epoch in range(self.epoch):
            choices = self._choices(epoch)
            np.add.at(drawn, (choices, self._workers(epoch, choices)), 1)
        choices = self._choices(self.epoch)
        workers = self._workers(self.epoch, choices)
        for step in range(self.iters_per_epoch):
            dataset_id, worker = int(choices[step]), int(workers[step])
            if step >= self.start_step:
                first = int(drawn[dataset_id, worker]) * self.batch_size
                if dataset_id in self.streams:
                    yield [(dataset_id, *self._consumer_item(dataset_id, worker, first + j)) for j in range(self.batch_size)]
                else:
                    yield [(dataset_id, *self._stream(dataset_id, first + j)) for j in range(self.batch_size)]
            drawn[dataset_id, worker] += 1
