"""What ``train.py`` does: parse → config → distributed set-up → task → model, data → runner."""

import argparse
import logging
import os
import random

import numpy as np
import torch

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a Video-LLaMA style model from a YAML experiment.")
    parser.add_argument("--cfg-path", required=True, help="experiment YAML")
    parser.add_argument("--options", nargs="+", default=[], help="overrides, key=value (e.g. run.init_lr=1e-4)")
    return parser.parse_args(argv)


def setup_seeds(seed, rank):
    seed = seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv=None):
    import video_llama  # noqa: F401  (registers the built-ins)
    from video_llama.common import dist_utils
    from video_llama.common.config import Config, check_runtime
    from video_llama.common.logger import setup_logger
    from video_llama.common.registry import registry

    args = parse_args(argv)
    cfg = Config(args)  # every config problem is reported here, before any work
    check_runtime(cfg.config)
    setup_logger(int(os.environ.get("RANK", 0)))
    info = dist_utils.init_distributed_mode(cfg.run_cfg)
    setup_seeds(cfg.run_cfg.seed, info.rank)
    try:
        task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
        datasets = task.build_datasets(cfg)
        model = task.build_model(cfg)
        runner = registry.get_runner_class(cfg.run_cfg.runner)(cfg=cfg, task=task, model=model, datasets=datasets)
        return runner.train()
    finally:
        dist_utils.destroy()
