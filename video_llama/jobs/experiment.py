"""What ``train.py`` and ``evaluate.py`` do: parse → config → distributed set-up → task → model and
data → runner. Every config problem is reported before any data or model work. The arguments that
name an experiment (``--cfg-path``, ``--run``, ``--options``, ``--plugins``) are parsed here for
every command that builds one."""

import argparse
import logging
import os
from pathlib import Path

from video_llama.common import dist_utils
from video_llama.common.config import Config, ConfigError, check_runtime
from video_llama.common.errors import UserError
from video_llama.common.logger import setup_logger
from video_llama.common.registry import registry
from video_llama.common.run_folder import CONFIG, RunFolder, checkpoint_in_use
from video_llama.common.utils import seed_everything
from video_llama.jobs.feature_cache import check_trains_from_cache

logger = logging.getLogger(__name__)


def add_config_arguments(parser, what="experiment YAML", trained=False):
    """--cfg-path, --options, --plugins: how every command names its experiment. ``trained``: a
    command that uses a trained model, which ``--run`` names (and, without --cfg-path, its data)."""
    if trained:
        parser.add_argument("--cfg-path", help=f"{what}; without it, the run's own config (--run)")
        parser.add_argument("--run", help="a training run folder (its best checkpoint) or checkpoint folder: "
                                          "model.ckpt, and without --cfg-path the whole experiment as it trained")
    else:
        parser.add_argument("--cfg-path", required=True, help=what)
    parser.add_argument("--options", nargs="+", default=[], help="overrides, key=value (e.g. model.ckpt=output/run)")
    parser.add_argument("--plugins", nargs="+", default=[], help="modules or .py files that register builders etc.")
    return parser


def parse_args(argv=None, description="", trained=False):
    return add_config_arguments(argparse.ArgumentParser(description=description), trained=trained).parse_args(argv)


def experiment(args, run_defaults=()):
    """(YAML path, options) that parsed ``args`` name. With ``--run`` the model is the run's
    (``model.ckpt``); without ``--cfg-path`` the experiment is the config the run saved (data,
    processors, settings), its outputs go into ``RUN/evaluations``, and ``run_defaults`` (options)
    apply before the user's."""
    run, options = getattr(args, "run", None), list(args.options)
    if not run:
        if not args.cfg_path:
            raise UserError("name the model: --run RUN_DIR (a training run folder), or --cfg-path with model.ckpt")
        return args.cfg_path, options
    if not Path(run).is_dir():
        raise UserError(f"--run {run}: no such folder; give a training run folder (output_dir/<time>) or one of "
                        "its checkpoint_* folders")
    options = [f"model.ckpt={run}", *options]
    if args.cfg_path:
        return args.cfg_path, options
    saved = checkpoint_in_use(run) / CONFIG
    if not saved.is_file():
        raise UserError(f"--run {run}: {saved} is missing, so the run cannot describe its experiment; give "
                        "--cfg-path with an evaluation YAML too")
    return str(saved), [f"run.output_dir={RunFolder.of(run).evaluations}", *run_defaults, *options]


def check_evaluable(model_cfg):
    """Evaluation scores the weights ``model.ckpt`` names; without it, those of an untrained
    model, which look like a result. ``model.ckpt: random`` asks for that on purpose."""
    if not model_cfg.get("ckpt"):
        raise ConfigError(["model.ckpt is not set, so evaluation would score an untrained model; set it to the "
                           "training run folder (--options model.ckpt=output/<run>) or a checkpoint, or to "
                           "'random' to score the random initialisation on purpose"])


def check_memory(cfg, info):
    """``run.memory_check``: before a GPU run builds anything, plan one step on fake tensors
    (jobs/plan.py) and warn when it will not fit the GPU. Returns the warning, or None (also on
    the CPU, under FSDP over several GPUs, whose shards the plan does not model yet, and when the
    model cannot be planned: a problem of the planner never stops a run)."""
    run = cfg.run_cfg
    if not run.memory_check or not info.device.startswith("cuda"):
        return None
    if run.strategy == "fsdp" and info.world_size > 1:
        logger.info("run.memory_check: skipped under FSDP (the plan is of one unsharded GPU)")
        return None
    import torch

    from video_llama.jobs.plan import startup_memory_check

    try:
        return startup_memory_check(cfg, torch.cuda.get_device_properties(info.device).total_memory)
    except Exception as err:  # noqa: BLE001 - the run itself may still be fine
        logger.warning("run.memory_check: the step could not be planned (%s: %s); training goes on", type(err).__name__, err)
        return None


def run_job(argv, description, action, evaluating=False):
    """Parse ``argv`` (``evaluating``: a command that uses a trained model), build the experiment's
    task, data, model and runner, and return ``action(runner)``."""
    args = parse_args(argv, description, trained=evaluating)
    if evaluating:
        args.cfg_path, args.options = experiment(args, ["run.test_splits=[test]"])
    cfg = Config(args, trained_model=evaluating)
    if evaluating or cfg.run_cfg.evaluate:
        check_evaluable(cfg.model_cfg)
        if not cfg.run_cfg.get("test_splits"):
            raise ConfigError(["run.test_splits is empty, so there is nothing to evaluate; name the splits, "
                               "e.g. --options run.test_splits=[test]"])
    check_runtime(cfg.config)
    setup_logger(int(os.environ.get("RANK", 0)))
    info = dist_utils.init_distributed_mode(cfg.run_cfg)
    seed_everything(cfg.run_cfg.seed + info.rank)  # per rank
    try:
        evaluation_only = evaluating or cfg.run_cfg.evaluate
        if not evaluation_only and info.rank == 0:
            check_memory(cfg, info)
        task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
        datasets = task.build_datasets(cfg, splits=set(cfg.run_cfg.test_splits) if evaluation_only else None)
        model = task.build_model(cfg)
        if info.rank == 0:  # other ranks' random encoders become rank 0's when the model is wrapped
            check_trains_from_cache(model, datasets)
        runner = registry.get_runner_class(cfg.run_cfg.runner)(cfg=cfg, task=task, model=model, datasets=datasets)
        result = action(runner)
        # every rank done before any tears its process group down: a gloo thread still holding work at
        # exit aborts the process ("terminate called without an active exception", seen once in CI).
        # Only on success: after an error the other ranks may never reach a barrier.
        dist_utils.barrier()
        return result
    finally:
        dist_utils.destroy()


def train(argv=None):
    """Train from a YAML experiment; returns the runner's summary. ``run.evaluate: True`` only
    evaluates ``run.test_splits`` (as evaluate.py does)."""
    return run_job(argv, "Train a Video-LLaMA style model from a YAML experiment.",
                lambda runner: runner.evaluate_only() if runner.run_cfg.evaluate else runner.train())


def evaluate(argv=None):
    """Evaluate ``run.test_splits`` with the task's metrics; returns them."""
    return run_job(argv, "Evaluate a Video-LLaMA style model on run.test_splits.", lambda runner: runner.evaluate_only(),
                evaluating=True)
