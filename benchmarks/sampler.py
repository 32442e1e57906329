"""Main-process cost of the training sampler per batch, at WebVid size.

    .venv/bin/python benchmarks/sampler.py [--samples 2500000] [--batch-size 32] [--batches 2000]

Draws batches of ``MixingBatchSampler`` (two datasets mixed 3:1, 8 ranks, this process rank 3)
and prints the mean time per batch, first batch (the pass's permutation) included. Target: under
1 ms per batch.
"""

import argparse
import time

from video_llama.datasets.sampling import MixingBatchSampler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2_500_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2000)
    args = parser.parse_args()
    sampler = MixingBatchSampler([args.samples, args.samples // 10], [3, 1], args.batch_size, seed=0, rank=3,
                                 world_size=8, iters_per_epoch=args.batches)
    start = time.perf_counter()
    first = None
    for i, _ in enumerate(sampler):
        if i == 0:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    print(f"{args.batches} batches of {args.batch_size} from {args.samples:,} + {args.samples // 10:,} samples: "
          f"{1000 * total / args.batches:.3f} ms per batch on average (first batch {1000 * first:.1f} ms: "
          "the permutations of the first pass)")


if __name__ == "__main__":
    main()
