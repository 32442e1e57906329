"""Logging set-up: rank 0 logs at INFO, other ranks only warnings (and say which rank they are)."""

import logging
import sys


def setup_logger(rank=0):
    """Configure the root logger once; handlers someone else installed (a notebook, pytest) stay."""
    level = logging.INFO if rank == 0 else logging.WARNING
    root = logging.getLogger()
    if not any(getattr(h, "_video_llama", False) for h in root.handlers):
        prefix = "" if rank == 0 else f"[rank {rank}] "
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._video_llama = True
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
