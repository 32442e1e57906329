"""Training checkpoints: written atomically, resumable exactly.

A checkpoint is a folder::

    checkpoint_e{epoch}_s{step}/
        model.safetensors      trainable weights only (frozen parts come from their own files)
        training_state.pt      optimizer, scaler, epoch, next step, RNG states of every rank
        config.yaml            the resolved config of the run

It is written under a temporary name and renamed into place, and ``latest`` (a one-line file
naming the newest checkpoint) is replaced atomically afterwards: a process killed while writing
leaves the previous checkpoint, and ``latest``, as they were. Finding checkpoints in a run folder
is :mod:`video_llama.common.run_folder`'s.
"""

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from video_llama.common.errors import CheckpointError
from video_llama.common.run_folder import BEST, CONFIG, LATEST, STATE, WEIGHTS, resolve_checkpoint


def rng_state():
    """This process's RNG states, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _shareable(path, mode):
    """mkdtemp/mkstemp create 0700/0600; give what the user's umask gives any new file, so that
    teammates on a shared machine can read the checkpoints."""
    os.chmod(path, mode & ~_umask())


def _write_text_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    _shareable(tmp, 0o666)
    os.replace(tmp, path)


def save_checkpoint(run_dir, name, weights, state, config_yaml, metadata=None):
    """Write ``run_dir/name`` atomically and point ``run_dir/latest`` at it; ``metadata`` ({str: str})
    goes into the weights file's header. Returns its path."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    final = run_dir / name
    for stale in run_dir.glob(".tmp-checkpoint_*"):  # left by a process killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".tmp-{name}-"))
    _shareable(tmp, 0o777)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS), metadata=metadata)
        torch.save(state, tmp / STATE)
        (tmp / CONFIG).write_text(config_yaml)
        for written in (WEIGHTS, STATE, CONFIG):  # safetensors writes 0600
            _shareable(tmp / written, 0o666)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text_atomic(run_dir / LATEST, name + "\n")
    return final


def prune_checkpoints(run_dir, keep, protect=()):
    """Delete all but the newest ``keep`` checkpoint folders of ``run_dir``; ``protect`` (the
    best, the latest) stay whatever their age. Returns the names deleted."""
    def order(folder):
        epoch, step = folder.name[len("checkpoint_e"):].split("_s")
        return int(epoch), int(step)

    folders = sorted((f for f in Path(run_dir).glob("checkpoint_e*_s*") if f.is_dir()), key=order)
    doomed = [f for f in folders[:-keep] if f.name not in protect] if keep else []
    for folder in doomed:
        shutil.rmtree(folder)
    return [f.name for f in doomed]


def mark_best(run_dir, name, metrics):
    """Record ``name`` as the run's best checkpoint (``run_dir/best``: name, then the metrics)."""
    import json

    _write_text_atomic(Path(run_dir) / BEST, f"{name}\n{json.dumps(metrics)}\n")


def load_checkpoint(path):
    """(weights, training state, config yaml text) of a checkpoint folder or run folder."""
    from safetensors.torch import load_file

    folder = resolve_checkpoint(path)
    try:
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
        weights = load_file(str(folder / WEIGHTS))
        config_yaml = (folder / CONFIG).read_text()
    except Exception as err:  # truncated or foreign files: pickle, safetensors and OS errors
        raise CheckpointError(f"run.resume_ckpt_path: {folder} cannot be read ({type(err).__name__}: {err}); "
                              "it was cut short or is not ours: resume from an earlier checkpoint_* folder") from err
    return weights, state, config_yaml, folder
