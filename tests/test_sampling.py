from collections import Counter

import torch

from video_llama.datasets.sampling import MixedDataset, MixingBatchSampler


def batches(sampler, epoch=0, start=0):
    sampler.set_epoch(epoch, start)
    return list(sampler)


def test_ranks_see_different_samples_and_the_same_number_of_steps():
    ranks = [MixingBatchSampler([10], [1], batch_size=2, seed=3, rank=r, world_size=2) for r in range(2)]
    seen = [[i for batch in batches(s) for (_, i, _) in batch] for s in ranks]
    assert len(batches(ranks[0])) == len(batches(ranks[1])) == 2  # one pass: 5 samples per rank → 2 batches
    assert not set(seen[0]) & set(seen[1])


def test_deterministic_and_resumable_mid_epoch():
    sampler = MixingBatchSampler([7, 5], [2, 1], batch_size=3, seed=1, iters_per_epoch=6)
    full = batches(sampler, epoch=1)
    assert full == batches(MixingBatchSampler([7, 5], [2, 1], batch_size=3, seed=1, iters_per_epoch=6), epoch=1)
    assert batches(sampler, epoch=1, start=4) == full[4:]
    assert batches(sampler, epoch=0) != full  # a new epoch reshuffles


def test_stream_wraps_into_a_new_shuffled_pass():
    sampler = MixingBatchSampler([4], [1], batch_size=2, seed=0, iters_per_epoch=4)
    seen = [i for batch in batches(sampler) for (_, i, _) in batch]
    assert sorted(seen[:4]) == sorted(seen[4:]) == [0, 1, 2, 3]
    assert len({s for batch in batches(sampler) for (_, _, s) in batch}) == 8  # a seed per sample


def test_mixing_follows_sample_ratio():
    sampler = MixingBatchSampler([50, 50], [3, 1], batch_size=1, seed=0, iters_per_epoch=2000)
    counts = Counter(d for batch in batches(sampler) for (d, _, _) in batch)
    assert abs(counts[0] / 2000 - 0.75) < 0.04


def test_samples_and_seeds_do_not_depend_on_how_the_batch_is_split():
    """2 ranks × batch 2 read (and augment) exactly the samples of 1 rank × batch 4."""
    one = next(iter(MixingBatchSampler([10], [1], batch_size=4, seed=5)))
    ranks = [next(iter(MixingBatchSampler([10], [1], batch_size=2, seed=5, rank=r, world_size=2))) for r in range(2)]
    assert sorted(one) == sorted(ranks[0] + ranks[1])


def test_a_plain_dataset_gets_its_seed_through_the_mix():
    """Any torch Dataset works in the mix: the seed reaches it through the global generators."""
    import random

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return index, random.random(), torch.rand(1).item()

    mixed = MixedDataset([Plain()])
    state = random.getstate()
    assert mixed[(0, 2, 11)] == mixed[(0, 2, 11)] != mixed[(0, 2, 12)]
    assert random.getstate() == state  # the caller's generators are left as they were
