"""Calibrate a trained run on a held-out split: predict it in rank mode, fit the temperature (and
the abstention threshold) with ``tasks.calibration.fit``, and write ``calibration.json`` into the
run folder without losing the one before."""

import json
import sys
import time

from video_llama.common import dist_utils
from video_llama.common.errors import UserError
from video_llama.common.run_folder import CALIBRATION
from video_llama.tasks.action_recognition import label_set
from video_llama.tasks.calibration import calibration_path, check_certifiable, fit


def calibrate(runner, split, target_error):
    """Predict ``split`` in rank mode with the runner's model and write calibration.json beside it
    (an earlier one is kept under a timestamped name)."""
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
