"""Logging set-up: rank 0 logs at INFO, other ranks only warnings (and say which rank they are)."""

import logging
import sys


def setup_logger(rank=0):
    level = logging.INFO if rank == 0 else logging.WARNING
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if rank == 0 else f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S", stream=sys.stdout, force=True)
    for noisy in ("httpx", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
