"""Calibration on fixed scores: temperature fitting, ECE, risk–coverage, a risk-controlling threshold."""

import numpy as np

from video_llama.tasks.calibration import (
    expected_calibration_error,
    fit_temperature,
    probabilities,
    reliability_bins,
    risk_controlling_threshold,
    risk_coverage,
)


def calibrated_set(n, classes=4, seed=0, scale=1.5):
    """(logits, truth): truths drawn from softmax(logits), so the logits are calibrated at T = 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * scale
    p = probabilities(logits)
    truth = np.array([rng.choice(classes, p=row) for row in p])
    return logits, truth


def confidence_and_correct(scores, truth, temperature=1.0):
    p = probabilities(scores, temperature)
    return p.max(axis=1), (p.argmax(axis=1) == truth).astype(float)


def test_a_fitted_temperature_undoes_overconfidence():
    logits, truth = calibrated_set(4000)
    scores = 4.0 * logits  # an overconfident model: the right ranking, four times too sure
    before = expected_calibration_error(*confidence_and_correct(scores, truth))
    temperature = fit_temperature(scores, truth)
    after = expected_calibration_error(*confidence_and_correct(scores, truth, temperature))
    assert 3.5 < temperature < 4.5
    assert before > 0.15 and after < 0.03


def test_the_risk_controlling_threshold_keeps_its_error_on_held_out_scores():
    logits, truth = calibrated_set(6000, seed=1, scale=3.0)
    conf, correct = confidence_and_correct(logits, truth)
    target = 0.10
    threshold = risk_controlling_threshold(conf[:3000], correct[:3000], target)
    decided = conf[3000:] >= threshold
    error = 1 - correct[3000:][decided].mean()
    assert 0.2 < decided.mean() < 1.0  # it abstains on some, decides many
    assert error <= target + 0.02  # 3,000 held-out scores: about two standard errors
    assert risk_controlling_threshold(conf[:10], np.zeros(10), 0.05) == 1.0  # nothing can be decided


def test_bins_and_risk_coverage_add_up():
    conf = np.array([0.95, 0.9, 0.6, 0.55, 0.3])
    correct = np.array([1, 1, 0, 1, 0])
    rows = reliability_bins(conf, correct, bins=15)
    assert len(rows) == 15 and sum(r[4] for r in rows) == 5
    coverage, risk = risk_coverage(conf, correct)
    assert coverage.tolist() == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert risk[1] == 0 and abs(risk[-1] - 0.4) < 1e-9  # full coverage: the plain error
    assert np.allclose(probabilities(np.array([[1.0, 2.0, 3.0]]), 2.0).sum(), 1.0)
