"""``video-llama calibrate``: fit the softmax temperature of a run's label scores on a held-out split
and, optionally, the confidence threshold under which its decisions abstain, then write both into
the run folder (``calibration.json``; for a checkpoint file such as the original runner's
``checkpoint_2.pth``, beside it as ``checkpoint_2.calibration.json``), where ``evaluate.py`` and
``select-mode`` pick them up.

    video-llama calibrate --cfg-path eval_configs/quickstart_action_tiny.yaml \\
        --options model.ckpt=output/quickstart/runs/<run> [--split val] [--target-error 0.05]

The temperature minimises the negative log-likelihood of the true labels on the split; the
threshold is the lowest confidence at which the decisions on the split err at most
``--target-error`` under a finite-sample correction (split conformal risk control), so on new clips
from the same distribution the decided ones err about that often.

A split that cannot be calibrated on (one class only, too few clips for the target error) is
refused with the reason; a fit that may not be trusted (a temperature at the end of its search
range, a threshold that decides nothing) is written with its reasons in ``warnings``. An earlier
calibration.json is kept as calibration.<when it was written>.json, never overwritten.
"""

import argparse

from video_llama.jobs.calibrate import calibrate
from video_llama.jobs.experiment import add_config_arguments, run_job


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama calibrate", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, "evaluation YAML (model.ckpt: the run to calibrate)", trained=True)
    parser.add_argument("--split", default="val", help="the held-out split to fit on (not the test split)")
    parser.add_argument("--target-error", type=float, default=None,
                        help="also fit the abstention threshold for this error rate among decided clips, e.g. 0.05")
    args = parser.parse_args(argv)
    if args.target_error is not None and not 0 < args.target_error < 1:
        parser.error("--target-error must be in (0, 1)")
    named = [*(["--cfg-path", args.cfg_path] if args.cfg_path else []), *(["--run", args.run] if args.run else [])]
    job_argv = [*named, "--options", *args.options, f"run.test_splits=[{args.split}]",
                "run.eval_mode=rank", *(["--plugins", *args.plugins] if args.plugins else [])]
    run_job(job_argv, "calibrate", lambda runner: calibrate(runner, args.split, args.target_error), evaluating=True)
    return 0
