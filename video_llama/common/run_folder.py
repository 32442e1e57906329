"""A training run's folder: the one place that knows its layout, so that every command given a run
needs only the folder::

    RUN/
        config.yaml                the run's resolved config
        checkpoint_e{E}_s{S}/      model.safetensors, training_state.pt, config.yaml (see checkpointing)
        latest                     the newest checkpoint's name
        best                       the best checkpoint's name, then its validation metrics (JSON)
        calibration.json           written by `video-llama calibrate`
        metrics.jsonl, summary.json, eval_epoch*/, evaluations/

Checkpoints are written by :mod:`video_llama.common.checkpointing`; this module finds them.
"""

import json
from pathlib import Path

from video_llama.common.errors import CheckpointError

WEIGHTS, STATE, CONFIG, LATEST, BEST = "model.safetensors", "training_state.pt", "config.yaml", "latest", "best"
CALIBRATION = "calibration.json"
EVALUATIONS = "evaluations"  # where commands given only the run (--run) write their results


def is_checkpoint(path):
    path = Path(path)
    return (path / WEIGHTS).is_file() and (path / STATE).is_file()


class RunFolder:
    """A run folder of ours (see the module's docstring)."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def of(cls, path):
        """The run of ``path`` (a run folder, or a checkpoint folder inside one), or None."""
        path = Path(path) if path else None
        if path is None or not path.is_dir():
            return None
        if is_checkpoint(path):
            return cls(path.parent)
        return cls(path) if (path / LATEST).is_file() or (path / CONFIG).is_file() else None

    def config(self, checkpoint=None):
        """The config (OmegaConf) ``checkpoint`` (a folder) saved, else the run's; None when neither is there."""
        from omegaconf import OmegaConf

        path = next((f for f in ([Path(checkpoint) / CONFIG] if checkpoint else []) + [self.path / CONFIG]
                     if f.is_file()), None)
        return OmegaConf.load(path) if path else None

    @property
    def calibration_path(self):
        return self.path / CALIBRATION

    @property
    def evaluations(self):
        return self.path / EVALUATIONS

    def best(self):
        """(checkpoint name, its validation metrics) that ``best`` records, or None."""
        lines = (self.path / BEST).read_text().splitlines() if (self.path / BEST).is_file() else []
        if not lines:
            return None
        try:
            metrics = json.loads(lines[1]) if len(lines) > 1 else {}
        except ValueError:
            metrics = {}
        return lines[0].strip(), metrics

    def checkpoint(self, prefer=LATEST, key="run.resume_ckpt_path"):
        """The checkpoint folder the ``prefer`` pointer names, else ``latest``'s.

        Raises:
            CheckpointError: naming ``key`` and what the folder lacks.
        """
        for pointer in (prefer, LATEST):
            if (self.path / pointer).is_file():
                lines = (self.path / pointer).read_text().splitlines()
                name = lines[0].strip() if lines else ""
                if not name or not is_checkpoint(self.path / name):
                    raise CheckpointError(
                        f"{key}: {self.path / pointer} names {name or 'nothing'}, which is not a complete checkpoint "
                        f"folder; point {key} at one of the checkpoint_* folders in {self.path} instead")
                return self.path / name
        raise CheckpointError(
            f"{key}: {self.path} is neither a checkpoint folder (with {WEIGHTS} and {STATE}) nor "
            f"a run folder with a '{LATEST}' file; point it at output_dir/<run>/checkpoint_... or output_dir/<run>")

    def describe(self, chosen):
        """How this run came to mean checkpoint folder ``chosen``, for the log."""
        best = self.best()
        if best and best[0] == Path(chosen).name:
            scores = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in best[1].items())
            return f"{chosen}, the run's best ({scores or 'no metric recorded'})"
        return f"{chosen}, the run's latest (it records no best: trained without validation)"


def resolve_checkpoint(path, prefer=LATEST, key="run.resume_ckpt_path"):
    """A checkpoint folder as it is, or a run folder's checkpoint (``prefer``'s, else ``latest``'s).

    Raises:
        CheckpointError: naming ``key`` and what the folder lacks.
    """
    path = Path(path)
    return path if is_checkpoint(path) else RunFolder(path).checkpoint(prefer, key)


def checkpoint_in_use(path):
    """What ``model.ckpt = path`` loads: a run folder's best checkpoint folder (else its latest);
    any other path (a checkpoint folder, a weights file, a Hugging Face folder) as it is."""
    path = Path(path)
    if path.is_dir() and not is_checkpoint(path) and (path / LATEST).is_file():
        return RunFolder(path).checkpoint(BEST, key="model.ckpt")
    return path
