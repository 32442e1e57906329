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
import json
import math
import sys
import time

import numpy as np

from video_llama.common.errors import UserError


def fit(predictions, labels, target_error=None):
    """{temperature, ECE before/after, threshold and its coverage on these predictions, warnings}
    from rank-mode predictions (``scores`` per label, true ``label``). A split that cannot give a
    meaningful fit is refused; ``warnings`` say why a fit it did give may not be trusted."""
    from video_llama.tasks.calibration import (
        conformal_bounds,
        expected_calibration_error,
        fit_temperature,
        probabilities,
        risk_controlling_threshold,
    )

    index = {label: i for i, label in enumerate(labels)}
    known = [p for p in predictions if p["label"] in index]
    if len(known) < 2:
        raise UserError(f"calibration needs at least 2 scored clips whose answer is one of the labels {labels}; "
                        f"got {len(known)}: choose a larger split (--split)")
    truth = np.array([index[p["label"]] for p in known])
    if len(set(truth.tolist())) < 2:
        raise UserError(f"all {len(known)} scored clips have the label {known[0]['label']!r}: a temperature fitted on "
                        f"one class only learns to be sure of it; calibrate on a split (--split) holding clips of at "
                        f"least two of the labels {labels}")
    if target_error is not None:
        check_certifiable(len(known), target_error, "the split (its clips with one of the labels)")
    scores = np.array([[p["scores"][label] for label in labels] for p in known])
    temperature = fit_temperature(scores, truth)
    correct = scores.argmax(axis=1) == truth  # a temperature changes how sure, never which label
    before, after = probabilities(scores).max(axis=1), probabilities(scores, temperature).max(axis=1)
    result = {"temperature": temperature, "n": len(known), "labels": labels, "accuracy": float(correct.mean()),
              "ece_before": expected_calibration_error(before, correct),
              "ece_after": expected_calibration_error(after, correct)}
    warning = temperature_warning(temperature, result["accuracy"])
    warnings = [warning] if warning else []
    confidence = after
    if target_error is not None:
        threshold = risk_controlling_threshold(confidence, correct, target_error)
        decided = confidence >= threshold
        result.update(target_error=target_error, threshold=threshold, coverage=float(decided.mean()),
                      error_on_decided=float(1 - correct[decided].mean()) if decided.any() else None)
        _, bound = conformal_bounds(confidence, correct)
        if bound.min() > target_error:
            best = float(bound.min())
            warnings.append(f"no confidence threshold certifies --target-error {target_error} on these {len(known)} "
                            f"clips (accuracy {result['accuracy']:.3f}): (errors+1)/(decided+1) is at best {best:.4f}, "
                            f"deciding the {int(bound.argmin()) + 1} most confident, so the threshold is 1.0 and "
                            f"evaluation and select-mode will abstain on every clip; raise --target-error to "
                            f"{rounded_up(best)} or more, or calibrate on a larger split (--split)")
    result["warnings"] = warnings
    return result


def check_certifiable(n, target_error, where):
    """Refuse a --target-error that ``n`` clips cannot certify: their threshold could only decide
    nothing, whatever the model scores."""
    from video_llama.tasks.calibration import fewest_clips

    needed = fewest_clips(target_error)
    if n < needed:
        best = 1 / (n + 1)
        raise UserError(f"--target-error {target_error} needs at least {needed} clips and {where} has {n}: under "
                        f"the finite-sample bound (errors+1)/(decided+1) <= target, {n} clips certify at best "
                        f"1/{n + 1} = {best:.4f} (every clip decided and right); calibrate on a larger split "
                        f"(--split), raise --target-error to {rounded_up(best)} or more, or leave it out to fit "
                        f"the temperature only")


def temperature_warning(temperature, accuracy):
    """Why a temperature at either end of fit_temperature's search range cannot be trusted; None
    inside it (the NLL kept falling towards that end, so the fit is the range's, not the data's)."""
    from video_llama.tasks.calibration import TEMPERATURE_RANGE

    low, high = TEMPERATURE_RANGE
    tolerance = 0.01  # in log T: within 1% of the bound
    if abs(math.log(temperature / low)) < tolerance:
        return (f"temperature {temperature:.3f} is at the lower end of its search range ({low}): sharper "
                f"probabilities only ever helped on this split (accuracy {accuracy:.3f}; scores that separate the "
                f"clips perfectly do this), so they come out near 0 or 1 and will be overconfident on new clips; "
                f"calibrate on a larger split that holds clips the model gets wrong (--split)")
    if abs(math.log(temperature / high)) < tolerance:
        return (f"temperature {temperature:.3f} is at the upper end of its search range ({high}): the scores barely "
                f"tell this split's labels apart (accuracy {accuracy:.3f}; equal scores for every label do this), so "
                f"the probabilities come out near uniform; check that model.ckpt is the trained run and that the "
                f"split's labels are the ones it learned")
    return None


def rounded_up(value):
    """``value`` rounded up to 3 decimals: a --target-error worth suggesting, never just under it."""
    return math.ceil(value * 1000) / 1000


def keep_previous(path):
    """Move an existing calibration file aside, named by when it was written, so that a re-run
    never loses the one evaluation used so far; the new name, or None when there was none."""
    if not path.is_file():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    backup, n = path.with_name(f"{path.stem}.{stamp}{path.suffix}"), 2
    while backup.exists():
        backup, n = path.with_name(f"{path.stem}.{stamp}-{n}{path.suffix}"), n + 1
    path.rename(backup)
    return backup


def calibrate(runner, split, target_error):
    """Predict ``split`` in rank mode with the runner's model and write calibration.json beside it
    (an earlier one is kept under a timestamped name)."""
    from video_llama.common import dist_utils
    from video_llama.tasks.action_recognition import label_set
    from video_llama.common.run_folder import CALIBRATION
    from video_llama.tasks.calibration import calibration_path

    ckpt = runner.config.model_cfg.get("ckpt")
    path = calibration_path(ckpt)
    if path is None:
        raise UserError(f"model.ckpt={ckpt!r} is neither a run folder of ours nor a checkpoint file; calibrate "
                        f"writes {CALIBRATION} into the run folder (or beside the file), so point model.ckpt at one")
    holders = [d for parts in runner.datasets.values() for s, d in parts.items() if s == split]
    if not holders:
        raise UserError(f"no dataset has a {split!r} split (--split); "
                        f"splits: { {n: sorted(p) for n, p in runner.datasets.items()} }")
    dataset, run = holders[0], runner.run_cfg
    if target_error is not None:  # before the predictions, which take the time
        check_certifiable(len(dataset), target_error, f"split {split!r}")
    labels = label_set(run, dataset.anno_files, lambda: dataset.records, ckpt)
    local, _ = runner.task.predict(runner.model, runner.eval_loader(dataset), labels, "rank",
                                   length_norm=run.length_norm)
    predictions = [p for part in dist_utils.all_gather_object(local) for p in part]
    result = {**fit(predictions, labels, target_error), "split": split, "ckpt": str(ckpt),
              "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    if dist_utils.is_main_process():
        previous = keep_previous(path)
        path.write_text(json.dumps(result, indent=1))
        line = (f"temperature {result['temperature']:.3f} fitted on {result['n']} clips of {split!r}: "
                f"ECE {result['ece_before']:.3f} -> {result['ece_after']:.3f}")
        if target_error is not None:
            error = result["error_on_decided"]
            line += (f"; threshold {result['threshold']:.3f} for error <= {target_error}: coverage "
                     f"{result['coverage']:.3f}, error on the decided {'n/a' if error is None else f'{error:.3f}'}")
        print(f"{line}\nwritten: {path}" + (f" (the previous one kept as {previous.name})" if previous else ""))
        for warning in result["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    return result


def main(argv=None):
    from video_llama.cli.jobs import add_config_arguments, run_job

    parser = argparse.ArgumentParser(prog="video-llama calibrate", description=__doc__.splitlines()[0])
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
