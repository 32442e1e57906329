"""What ``train.py`` and ``evaluate.py`` do: parse → config → distributed set-up → task → model and
data → runner. Every config problem is reported before any data or model work."""

import argparse
import logging
import os

from video_llama.common.utils import seed_everything

logger = logging.getLogger(__name__)


def add_config_arguments(parser, what="experiment YAML"):
    """--cfg-path, --options, --plugins: how every command names its experiment."""
    parser.add_argument("--cfg-path", required=True, help=what)
    parser.add_argument("--options", nargs="+", default=[], help="overrides, key=value (e.g. model.ckpt=output/run)")
    parser.add_argument("--plugins", nargs="+", default=[], help="modules or .py files that register builders etc.")
    return parser


def parse_args(argv=None, description=""):
    return add_config_arguments(argparse.ArgumentParser(description=description)).parse_args(argv)


def check_evaluable(model_cfg):
    """Evaluation scores the weights ``model.ckpt`` names; without it, those of an untrained
    model, which look like a result. ``model.ckpt: random`` asks for that on purpose."""
    from video_llama.common.config import ConfigError

    if not model_cfg.get("ckpt"):
        raise ConfigError(["model.ckpt is not set, so evaluation would score an untrained model; set it to the "
                           "training run folder (--options model.ckpt=output/<run>) or a checkpoint, or to "
                           "'random' to score the random initialisation on purpose"])


def run_job(argv, description, action, evaluating=False):
    import video_llama  # noqa: F401  (registers the built-ins)
    from video_llama.common import dist_utils
    from video_llama.common.config import Config, check_runtime
    from video_llama.common.logger import setup_logger
    from video_llama.common.registry import registry

    cfg = Config(parse_args(argv, description), trained_model=evaluating)
    if evaluating or cfg.run_cfg.evaluate:
        check_evaluable(cfg.model_cfg)
        if not cfg.run_cfg.get("test_splits"):
            from video_llama.common.config import ConfigError

            raise ConfigError(["run.test_splits is empty, so there is nothing to evaluate; name the splits, "
                               "e.g. --options run.test_splits=[test]"])
    check_runtime(cfg.config)
    setup_logger(int(os.environ.get("RANK", 0)))
    info = dist_utils.init_distributed_mode(cfg.run_cfg)
    seed_everything(cfg.run_cfg.seed + info.rank)  # per rank
    try:
        task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
        datasets = task.build_datasets(cfg)
        model = task.build_model(cfg)
        runner = registry.get_runner_class(cfg.run_cfg.runner)(cfg=cfg, task=task, model=model, datasets=datasets)
        return action(runner)
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


def run_cli(job):
    """Run ``job`` for a command's ``__main__``: a problem the user can fix (a
    :class:`~video_llama.common.errors.UserError`, a missing file) prints as one message and exits
    2, without a traceback; Ctrl-C before the loop started exits 130 with one line. Returns what
    ``job`` returns."""
    import sys

    from video_llama.common.errors import UserError

    try:
        return job()
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
