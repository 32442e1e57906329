"""Calibrated closed-set decisions from the model's label scores (log-likelihoods of each label as
the answer): probabilities with a fitted temperature, how well they are calibrated (ECE,
reliability bins), what abstaining below a confidence buys (risk–coverage), and a threshold that
keeps the error of the decisions taken under a target (split conformal risk control).

Everything here is NumPy over arrays of scores, so it is tested on fixed numbers and used the
same way by evaluation, ``calibrate`` and the mode selector. ``fit`` is what ``calibrate``
fits on a split's predictions, and refuses a split that cannot be fitted on.
"""

import json
import math
from pathlib import Path

import numpy as np

from video_llama.common.errors import UserError
from video_llama.common.run_folder import CALIBRATION, RunFolder



def probabilities(scores, temperature=1.0):
    """Softmax over the labels (last axis) of ``scores / temperature``."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(scores, truth, temperature):
    """Mean negative log-likelihood of the true labels (indices) under the tempered softmax."""
    p = probabilities(scores, temperature)
    return float(-np.mean(np.log(p[np.arange(len(truth)), truth] + 1e-12)))


TEMPERATURE_RANGE = (0.05, 20.0)  # fit_temperature searches here; a fit at either end is suspect


def fit_temperature(scores, truth, low=TEMPERATURE_RANGE[0], high=TEMPERATURE_RANGE[1], iterations=60):
    """The temperature that minimises the validation NLL (a golden-section search over log T: the
    NLL is unimodal in T for a fixed set of scores)."""
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(iterations):
        if nll(scores, truth, np.exp(c)) < nll(scores, truth, np.exp(d)):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    return float(np.exp((a + b) / 2))


def reliability_bins(confidence, correct, bins=15):
    """[(bin low, bin high, mean confidence, accuracy, count)] over equal-width confidence bins."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        rows.append((float(edges[b]), float(edges[b + 1]), float(confidence[mask].mean()) if count else None,
                     float(correct[mask].mean()) if count else None, count))
    return rows


def expected_calibration_error(confidence, correct, bins=15):
    """ECE: the count-weighted mean |accuracy − confidence| over ``bins`` equal-width bins."""
    total = len(confidence)
    return float(sum(n * abs(acc - conf) for _, _, conf, acc, n in reliability_bins(confidence, correct, bins) if n) / total)


def risk_coverage(confidence, correct):
    """(coverage, risk) arrays: deciding only the k most confident of n, for k = 1..n, covers k/n
    and errs on the share of those k that are wrong."""
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    wrong = 1.0 - np.asarray(correct, dtype=np.float64)[order]
    k = np.arange(1, len(order) + 1)
    return k / len(order), np.cumsum(wrong) / k


def conformal_bounds(confidence, correct):
    """(confidences sorted high to low, bound): ``bound[k]`` is (errors + 1) / (decided + 1) when
    the k + 1 most confident clips are decided, the finite-sample correction of split conformal
    risk control; its minimum is the lowest error rate these clips can certify."""
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    conf = np.asarray(confidence, dtype=np.float64)[order]
    wrong = 1.0 - np.asarray(correct, dtype=np.float64)[order]
    return conf, (np.cumsum(wrong) + 1) / (np.arange(1, len(conf) + 1) + 1)


def fewest_clips(target_error):
    """The fewest clips whose bound can reach ``target_error``: (0 + 1) / (n + 1) ≤ target when all
    n are decided and right, so fewer can only ever decide nothing."""
    n = max(1, int(np.ceil(1 / target_error)) - 1)
    return n if 1 / (n + 1) <= target_error else n + 1


def risk_controlling_threshold(confidence, correct, target_error):
    """The lowest confidence threshold whose decisions on this (calibration) split err at most
    ``target_error``, counted conservatively as (errors + 1) / (decided + 1) (``conformal_bounds``);
    1.0 (decide nothing) when none does."""
    conf, bound = conformal_bounds(confidence, correct)
    ok = np.nonzero(bound <= target_error)[0]
    if len(ok) == 0:
        return 1.0
    k = ok[-1]  # the largest set of most-confident decisions that keeps the bound
    return float(conf[k])


def decide(probs, labels, threshold=None, unknown="unknown"):
    """(decision, confidence) of one probability row over ``labels``: the most probable label, or
    ``unknown`` when its probability is under ``threshold`` (None: always decide)."""
    best = int(np.argmax(probs))
    confidence = float(probs[best])
    return (labels[best] if threshold is None or confidence >= threshold else unknown), confidence


def calibration_path(ckpt):
    """Where ``video-llama calibrate`` keeps the calibration of ``ckpt``: its run folder's
    calibration.json, or beside a checkpoint file (``checkpoint_2.pth`` →
    ``checkpoint_2.calibration.json``: a model finetuned by the original code); None without one."""
    if not ckpt or ckpt == "random":
        return None
    run = RunFolder.of(ckpt)
    if run is not None:
        return run.calibration_path
    path = Path(ckpt)
    return path.with_name(f"{path.stem}.{CALIBRATION}") if path.is_file() else None


def load_calibration(ckpt):
    """The calibration `video-llama calibrate` wrote for ``ckpt``, or None when there is none."""
    path = calibration_path(ckpt)
    return json.loads(path.read_text()) if path and path.is_file() else None


def decision_settings(run_cfg, ckpt):
    """(temperature, threshold or None, abstain label) for rank-mode decisions: ``run.temperature``
    and ``run.decision_threshold`` when set, else those `video-llama calibrate` wrote for the run
    of ``ckpt``, else 1.0 and no abstention."""
    saved = load_calibration(ckpt) or {}
    temperature = run_cfg.get("temperature") or saved.get("temperature") or 1.0
    threshold = run_cfg.get("decision_threshold")
    if threshold is None:
        threshold = saved.get("threshold")
    return float(temperature), (None if threshold is None else float(threshold)), run_cfg.get("abstain_label") or "unknown"


def fit(predictions, labels, target_error=None):
    """{temperature, ECE before/after, threshold and its coverage on these predictions, warnings}
    from rank-mode predictions (``scores`` per label, true ``label``). A split that cannot give a
    meaningful fit is refused; ``warnings`` say why a fit it did give may not be trusted."""
    index = {label: i for i, label in enumerate(labels)}
    known = [p for p in predictions if p["label"] in index]
    if len(known) < 2 and predictions and not known:
        answers = sorted({p["label"] for p in predictions})
        raise UserError(f"none of the {len(predictions)} scored clips has an answer among the run's labels {labels} "
                        f"(their answers: {answers[:10]}): the YAML's build_info.anno_dir holds other data than the run "
                        "was trained on; give `--run RUN` alone (the run's own data), or point "
                        "datasets.<name>.build_info.anno_dir at your annotations")
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
