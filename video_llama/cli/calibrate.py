"""``video-llama calibrate``: fit the softmax temperature of a run's label scores on a held-out split
and, optionally, the confidence threshold under which its decisions abstain, then write both into
the run folder (``calibration.json``), where ``evaluate.py`` and ``select-mode`` pick them up.

    video-llama calibrate --cfg-path eval_configs/quickstart_action_tiny.yaml \\
        --options model.ckpt=output/quickstart/runs/<run> [--split val] [--target-error 0.05]

The temperature minimises the negative log-likelihood of the true labels on the split; the
threshold is the lowest confidence at which the decisions on the split err at most
``--target-error`` under a finite-sample correction (split conformal risk control), so on new clips
from the same distribution the decided ones err about that often.
"""

import argparse
import json
import time

import numpy as np


def fit(predictions, labels, target_error=None):
    """{temperature, ECE before/after, threshold and its coverage on these predictions} from
    rank-mode predictions (``scores`` per label, true ``label``)."""
    from video_llama.tasks.calibration import (
        expected_calibration_error,
        fit_temperature,
        probabilities,
        risk_controlling_threshold,
    )

    index = {label: i for i, label in enumerate(labels)}
    known = [p for p in predictions if p["label"] in index]
    if len(known) < 2:
        from video_llama.common.errors import UserError

        raise UserError(f"calibration needs at least 2 scored clips whose answer is one of the labels {labels}; "
                        f"got {len(known)}: choose a larger split (--split)")
    scores = np.array([[p["scores"][label] for label in labels] for p in known])
    truth = np.array([index[p["label"]] for p in known])
    temperature = fit_temperature(scores, truth)
    correct = scores.argmax(axis=1) == truth  # a temperature changes how sure, never which label
    before, after = probabilities(scores).max(axis=1), probabilities(scores, temperature).max(axis=1)
    result = {"temperature": temperature, "n": len(known), "labels": labels, "accuracy": float(correct.mean()),
              "ece_before": expected_calibration_error(before, correct),
              "ece_after": expected_calibration_error(after, correct)}
    confidence = after
    if target_error is not None:
        threshold = risk_controlling_threshold(confidence, correct, target_error)
        decided = confidence >= threshold
        result.update(target_error=target_error, threshold=threshold, coverage=float(decided.mean()),
                      error_on_decided=float(1 - correct[decided].mean()) if decided.any() else None)
    return result


def calibrate(runner, split, target_error):
    """Predict ``split`` in rank mode with the runner's model and write calibration.json beside it."""
    from video_llama.common import dist_utils
    from video_llama.common.errors import UserError
    from video_llama.tasks.action_recognition import label_set
    from video_llama.tasks.calibration import CALIBRATION_FILE, run_folder

    ckpt = runner.config.model_cfg.get("ckpt")
    folder = run_folder(ckpt)
    if folder is None:
        raise UserError(f"model.ckpt={ckpt!r} is not a run or checkpoint folder of ours; calibrate writes "
                        f"{CALIBRATION_FILE} into the run folder, so point model.ckpt at one")
    holders = [d for parts in runner.datasets.values() for s, d in parts.items() if s == split]
    if not holders:
        raise UserError(f"no dataset has a {split!r} split (--split); "
                        f"splits: { {n: sorted(p) for n, p in runner.datasets.items()} }")
    dataset, run = holders[0], runner.run_cfg
    labels = label_set(run, dataset.anno_files, lambda: dataset.records, ckpt)
    local, _ = runner.task.predict(runner.model, runner.eval_loader(dataset), labels, "rank",
                                   length_norm=run.length_norm)
    predictions = [p for part in dist_utils.all_gather_object(local) for p in part]
    result = {**fit(predictions, labels, target_error), "split": split, "ckpt": str(ckpt),
              "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    if dist_utils.is_main_process():
        (folder / CALIBRATION_FILE).write_text(json.dumps(result, indent=1))
        line = (f"temperature {result['temperature']:.3f} fitted on {result['n']} clips of {split!r}: "
                f"ECE {result['ece_before']:.3f} -> {result['ece_after']:.3f}")
        if target_error is not None:
            error = result["error_on_decided"]
            line += (f"; threshold {result['threshold']:.3f} for error <= {target_error}: coverage "
                     f"{result['coverage']:.3f}, error on the decided {'n/a' if error is None else f'{error:.3f}'}")
        print(f"{line}\nwritten: {folder / CALIBRATION_FILE}")
    return result


def main(argv=None):
    from video_llama.cli.jobs import add_config_arguments, run_job

    parser = argparse.ArgumentParser(prog="video-llama calibrate", description=__doc__.splitlines()[0])
    add_config_arguments(parser, "evaluation YAML (model.ckpt: the run to calibrate)")
    parser.add_argument("--split", default="val", help="the held-out split to fit on (not the test split)")
    parser.add_argument("--target-error", type=float, default=None,
                        help="also fit the abstention threshold for this error rate among decided clips, e.g. 0.05")
    args = parser.parse_args(argv)
    if args.target_error is not None and not 0 < args.target_error < 1:
        parser.error("--target-error must be in (0, 1)")
    job_argv = ["--cfg-path", args.cfg_path, "--options", *args.options, f"run.test_splits=[{args.split}]",
                "run.eval_mode=rank", *(["--plugins", *args.plugins] if args.plugins else [])]
    run_job(job_argv, "calibrate", lambda runner: calibrate(runner, args.split, args.target_error), evaluating=True)
    return 0
