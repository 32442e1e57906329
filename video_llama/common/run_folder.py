"""A training run's folder: the one place that knows its layout, writing and reading it, so that
every command given a run needs only the folder::

    RUN/
        config.yaml                the run's resolved config
        checkpoint_e{E}_s{S}/      a checkpoint (below)
        latest                     the newest checkpoint's name
        best                       the best checkpoint's name, then its validation metrics (JSON)
        labels.json                the answers the run chooses among (tasks with a closed label set)
        calibration.json           written by `video-llama calibrate`
        bad_clips.jsonl            every clip skipped as unreadable, by any worker of any rank (one a line)
        metrics.jsonl, summary.json, eval_epoch*/, evaluations/

A checkpoint is a folder::

    checkpoint_e{epoch}_s{step}/
        model.safetensors      trainable weights only (frozen parts come from their own files)
        training_state.pt      optimizer, scaler, epoch, next step, RNG states of every rank
        config.yaml            the resolved config of the run

It is written under a temporary name and renamed into place, and ``latest`` is replaced atomically
afterwards: a process killed while writing leaves the previous checkpoint, and ``latest``, as they
were.
"""

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from video_llama.common.errors import CheckpointError

WEIGHTS, STATE, CONFIG, LATEST, BEST = "model.safetensors", "training_state.pt", "config.yaml", "latest", "best"
CALIBRATION = "calibration.json"
LABELS = "labels.json"  # the answers the run trained to choose among (as `prepare` writes them)
EVALUATIONS = "evaluations"  # where commands given only the run (--run) write their results
BAD_CLIPS = "bad_clips.jsonl"  # the run's unreadable clips, appended by the datasets (FailureBudget)


def append_bad_clip(ledger, dataset, clip, error):
    """List one skipped clip in a run's ``bad_clips.jsonl``: one line per append, which the
    workers and ranks appending to it do not interleave."""
    line = json.dumps({"dataset": dataset, "clip": clip, "error": error, "rank": int(os.environ.get("RANK", 0)),
                       "pid": os.getpid()})
    with open(ledger, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def read_bad_clips(ledger):
    """The entries of a run's ``bad_clips.jsonl`` ({"dataset", "clip", "error", "rank", "pid"}); none
    when there is no such file. A line cut short by a crash is passed over."""
    return read_new_bad_clips(ledger)[0]


def read_new_bad_clips(ledger, offset=0):
    """(entries from byte ``offset`` on, the offset after the last whole line): a reader that keeps
    the offset reads each line once however often it looks (a line still being written waits)."""
    entries = []
    if not Path(ledger).is_file():
        return entries, offset
    with open(ledger, "rb") as f:
        f.seek(offset)
        data = f.read()
    whole = data[: data.rfind(b"\n") + 1]
    for line in whole.decode("utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries, offset + len(whole)


def is_checkpoint(path):
    path = Path(path)
    return (path / WEIGHTS).is_file() and (path / STATE).is_file()


class RunFolder:
    """A run folder of ours (see the module's docstring)."""

    def __init__(self, path):
        self.path = Path(path)

    # ------------------------------------------------------------------ writing
    @classmethod
    def create(cls, output_dir, name, config_yaml):
        """A new run folder ``output_dir/name`` (``name_1``, ``name_2``, ... when taken: never an
        earlier run's) holding the run's config."""
        base = Path(output_dir)
        path, suffix = base / name, 1
        while path.exists():
            path, suffix = base / f"{name}_{suffix}", suffix + 1
        path.mkdir(parents=True)
        return cls(path).write_config(config_yaml)

    def write_config(self, config_yaml):
        """The run's config.yaml (a resumed run writes the config it resumes with). Returns self."""
        (self.path / CONFIG).write_text(config_yaml)
        return self

    def save_checkpoint(self, name, weights, state, config_yaml, metadata=None):
        """Write checkpoint ``name`` atomically and point ``latest`` at it; ``metadata`` ({str: str})
        goes into the weights file's header. Returns its folder."""
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / name
        for stale in self.path.glob(".tmp-checkpoint_*"):  # left by a process killed while writing
            shutil.rmtree(stale, ignore_errors=True)
        tmp = None
        try:
            tmp = Path(tempfile.mkdtemp(dir=self.path, prefix=f".tmp-{name}-"))
            _shareable(tmp, 0o777)
            save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS), metadata=metadata)
            torch.save(state, tmp / STATE)
            (tmp / CONFIG).write_text(config_yaml)
            for written in (WEIGHTS, STATE, CONFIG):  # safetensors writes 0600
                _shareable(tmp / written, 0o666)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except (OSError, SafetensorError, RuntimeError) as err:  # torch and safetensors report a full disk their way
            full = _disk_full(err, self.path)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, RuntimeError) and not isinstance(err, SafetensorError) and not full:
                raise  # not the file system: a bug to see as it is
            raise self._not_written(name, err, full) from err
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            _write_text_atomic(self.path / LATEST, name + "\n")
        except OSError as err:  # a checkpoint that latest does not name would only confuse a resume
            full = _disk_full(err, self.path)
            shutil.rmtree(final, ignore_errors=True)
            raise self._not_written(name, err, full) from err
        return final

    def _not_written(self, name, err, full):
        """What a user reads when checkpoint ``name`` could not be written (a full disk, a quota)."""
        latest = (self.path / LATEST).read_text().strip() if (self.path / LATEST).is_file() else None
        kept = (f"the previous checkpoint {latest} is intact and '{LATEST}' still names it; resume from it with "
                f"--options run.resume_ckpt_path={self.path}" if latest else "no earlier checkpoint was written")
        why = "the disk is full" if full else "the file system refused it"
        return CheckpointError(f"checkpoint {name} could not be written in {self.path}: {why} ({err}). Nothing of it "
                               f"was left behind; {kept}. Free space there (run.keep_checkpoints keeps only the "
                               "newest checkpoints) or choose another run.output_dir")

    def checkpoints(self):
        """The run's checkpoint_e*_s* folders, oldest first."""
        def order(folder):
            epoch, step = folder.name[len("checkpoint_e"):].split("_s")
            return int(epoch), int(step)

        return sorted((f for f in self.path.glob("checkpoint_e*_s*") if f.is_dir()), key=order)

    def prune_checkpoints(self, keep, protect=()):
        """Delete all but the newest ``keep`` checkpoint folders; ``protect`` (the best, the latest)
        stay whatever their age. Returns the names deleted."""
        doomed = [f for f in self.checkpoints()[:-keep] if f.name not in protect] if keep else []
        for folder in doomed:
            shutil.rmtree(folder)
        return [f.name for f in doomed]

    def write_labels(self, labels):
        _write_text_atomic(self.path / LABELS, json.dumps({"labels": list(labels)}, indent=1) + "\n")

    def mark_best(self, name, metrics):
        """Record ``name`` as the run's best checkpoint (``best``: name, then the metrics)."""
        _write_text_atomic(self.path / BEST, f"{name}\n{json.dumps(metrics)}\n")

    # ------------------------------------------------------------------ reading

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

    def labels(self):
        """The labels the run keeps, or None (a run of a task without them, or an older run)."""
        path = self.path / LABELS
        return list(json.loads(path.read_text())["labels"]) if path.is_file() else None

    @property
    def bad_clips(self):
        """The file where every data-loader worker of every rank lists the clips it skipped."""
        return self.path / BAD_CLIPS

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


def load_checkpoint(path):
    """(weights, training state, config yaml text) of a checkpoint folder or run folder."""
    folder = resolve_checkpoint(path)
    try:
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
        weights = load_file(str(folder / WEIGHTS))
        config_yaml = (folder / CONFIG).read_text()
    except Exception as err:  # truncated or foreign files: pickle, safetensors and OS errors
        raise CheckpointError(f"run.resume_ckpt_path: {folder} cannot be read ({type(err).__name__}: {err}); "
                              "it was cut short or is not ours: resume from an earlier checkpoint_* folder") from err
    return weights, state, config_yaml, folder


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _shareable(path, mode):
    """mkdtemp/mkstemp create 0700/0600; give what the user's umask gives any new file, so that
    teammates on a shared machine can read the checkpoints."""
    os.chmod(path, mode & ~_umask())


def _disk_full(err, folder):
    """Whether a failed write ran out of room: the error says so, or (torch's writer says only
    "iostream error") the file system has less than 1 MiB left while the partial write is still there."""
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "os error 28" in str(err):
        return True
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def _write_text_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _shareable(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
