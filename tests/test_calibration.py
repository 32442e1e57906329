"""Calibration on fixed scores: temperature fitting, ECE, risk–coverage, a risk-controlling threshold."""

import numpy as np
import pytest

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


# ------------------------------------------------------------------ `video-llama calibrate`: refusals and warnings

LABELS = ["clean_mode", "greet_mode"]


def predictions_of(scores, truth):
    """Rank-mode predictions as `calibrate` gathers them: label scores and the true label per clip."""
    return [{"scores": dict(zip(LABELS, map(float, row))), "label": LABELS[t]} for row, t in zip(scores, truth)]


def noisy_predictions(n, seed=0):
    """Scores that rank most clips right, but not all, and not with equal certainty."""
    logits, truth = calibrated_set(n, classes=2, seed=seed, scale=3.0)
    return predictions_of(logits, truth)


def test_calibrate_refuses_a_split_of_one_class():
    from video_llama.tasks.calibration import fit
    from video_llama.common.errors import UserError

    one_class = predictions_of(np.array([[0.0, 1.0], [0.5, 2.0], [1.0, 0.2]]), [1, 1, 1])
    with pytest.raises(UserError, match=r"all 3 scored clips have the label 'greet_mode': .* only learns to be sure"):
        fit(one_class, LABELS)


def test_calibrating_on_data_of_other_labels_says_which_data_is_wrong():
    from video_llama.tasks.calibration import fit
    from video_llama.common.errors import UserError

    other = [{**p, "label": "Orbit"} for p in noisy_predictions(5)]  # the YAML's data, not the run's
    with pytest.raises(UserError, match=r"none of the 5 scored clips .* \['Orbit'\].*build_info.anno_dir.*--run RUN"):
        fit(other, LABELS)


def test_calibrate_refuses_a_target_error_too_few_clips_can_certify():
    from video_llama.tasks.calibration import check_certifiable, fit
    from video_llama.common.errors import UserError
    from video_llama.tasks.calibration import fewest_clips

    assert [fewest_clips(t) for t in (0.5, 0.2, 0.1, 0.05, 0.3)] == [1, 4, 9, 19, 3]  # 1/(n+1) <= target
    with pytest.raises(UserError, match=r"--target-error 0.05 needs at least 19 clips and the split .* has 10: "
                                        r".* 1/11 = 0.0909 .* raise --target-error to 0.091 or more"):
        fit(noisy_predictions(10), LABELS, target_error=0.05)
    check_certifiable(19, 0.05, "split 'val'")  # exactly enough: no error
    assert fit(noisy_predictions(10), LABELS, target_error=0.1)["n"] == 10


def test_calibrate_warns_when_no_threshold_keeps_the_target_error():
    from video_llama.tasks.calibration import fit

    logits, truth = calibrated_set(40, classes=2, seed=0, scale=1.0)
    weak = predictions_of(logits, truth)
    result = fit(weak, LABELS, target_error=0.05)  # 40 clips could certify 0.05, but 16 of them are wrong
    assert result["threshold"] == 1.0
    (warning,) = result["warnings"]
    assert warning.startswith("no confidence threshold certifies --target-error 0.05 on these 40 clips (accuracy "
                              "0.600): (errors+1)/(decided+1) is at best 0.1250, deciding the 7 most confident")
    assert "abstain on every clip; raise --target-error to 0.125 or more" in warning
    suggested = fit(weak, LABELS, target_error=0.125)  # the suggestion is enough
    assert suggested["threshold"] < 1.0 and suggested["warnings"] == []


def test_calibrate_warns_when_the_temperature_ends_at_its_search_bound():
    from video_llama.tasks.calibration import fit

    separated = predictions_of(np.array([[2.0, 0.0], [0.0, 3.0], [1.5, 0.0], [0.0, 2.5]]), [0, 1, 0, 1])
    result = fit(separated, LABELS)
    assert result["temperature"] < 0.051 and result["accuracy"] == 1.0
    assert [w.split(":")[0] for w in result["warnings"]] == [
        f"temperature {result['temperature']:.3f} is at the lower end of its search range (0.05)"]
    flat = fit(predictions_of(np.zeros((6, 2)), [0, 1, 0, 1, 0, 1]), LABELS)  # equal scores: nothing to learn
    assert flat["temperature"] > 19.8 and "upper end of its search range (20.0)" in flat["warnings"][0]
    assert fit(noisy_predictions(400), LABELS, target_error=0.1)["warnings"] == []  # an ordinary split


class FakeSplit(list):
    """A split of clips as calibrate reads it (its length; labels come from run.labels)."""

    anno_files, records = [], []


def test_calibrate_writes_its_warnings_and_keeps_the_previous_file(tmp_path, capsys):
    """calibrate() end to end with the model's predictions given: calibration.json gets the
    warnings, and a second run keeps the first file under a timestamped name."""
    import json
    import types

    from omegaconf import OmegaConf

    from video_llama.jobs.calibrate import calibrate
    from video_llama.common.run_folder import CONFIG
    from video_llama.common.errors import UserError

    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG).write_text("model: {}\n")
    separated = predictions_of(np.array([[2.0, 0.0], [0.0, 3.0], [1.5, 0.0], [0.0, 2.5]]), [0, 1, 0, 1])
    runner = types.SimpleNamespace(
        config=types.SimpleNamespace(model_cfg={"ckpt": str(run)}), datasets={"clips": {"val": FakeSplit(separated)}},
        run_cfg=OmegaConf.create({"labels": LABELS, "length_norm": False}), model=None, eval_loader=lambda split: split,
        task=types.SimpleNamespace(predict=lambda model, loader, labels, mode, length_norm: (list(loader), [])))
    first = calibrate(runner, "val", None)
    saved = json.loads((run / "calibration.json").read_text())
    assert saved["warnings"] == first["warnings"] and "lower end of its search range" in saved["warnings"][0]
    out = capsys.readouterr()
    assert "written:" in out.out and "previous" not in out.out and out.err.startswith("warning: temperature")

    calibrate(runner, "val", 0.2)
    (kept,) = [p for p in run.glob("calibration.*.json")]
    assert json.loads(kept.read_text()) == saved and json.loads((run / "calibration.json").read_text())["threshold"] < 1
    assert f"(the previous one kept as {kept.name})" in capsys.readouterr().out
    with pytest.raises(UserError, match="needs at least 9 clips and split 'val' has 4"):  # refused before predicting
        calibrate(runner, "val", 0.1)
    assert len(list(run.glob("calibration*.json"))) == 2


def test_a_checkpoint_file_is_calibrated_beside_it(tmp_path, capsys):
    """A checkpoint file (the original runner's checkpoint_2.pth) has no run folder: its
    calibration goes beside it, and decisions with it read it from there."""
    import types

    from omegaconf import OmegaConf

    from video_llama.jobs.calibrate import calibrate
    from video_llama.common.errors import UserError
    from video_llama.tasks.calibration import decision_settings

    ckpt = tmp_path / "checkpoint_2.pth"
    ckpt.write_bytes(b"weights")
    separated = predictions_of(np.array([[2.0, 0.0], [0.0, 3.0], [1.5, 0.0], [0.0, 2.5]]), [0, 1, 0, 1])

    def runner(model_ckpt):
        return types.SimpleNamespace(
            config=types.SimpleNamespace(model_cfg={"ckpt": model_ckpt}), datasets={"clips": {"val": FakeSplit(separated)}},
            run_cfg=OmegaConf.create({"labels": LABELS, "length_norm": False}), model=None, eval_loader=lambda split: split,
            task=types.SimpleNamespace(predict=lambda model, loader, labels, mode, length_norm: (list(loader), [])))

    result = calibrate(runner(str(ckpt)), "val", 0.2)
    assert f"written: {tmp_path / 'checkpoint_2.calibration.json'}" in capsys.readouterr().out
    assert decision_settings(OmegaConf.create({}), str(ckpt))[:2] == (result["temperature"], result["threshold"])
    with pytest.raises(UserError, match="neither a run folder of ours nor a checkpoint file"):
        calibrate(runner("random"), "val", None)
