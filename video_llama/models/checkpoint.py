"""Weights in and out: the original LAVIS / Video-LLaMA parameter names ↔ this project's modules.

Our modules keep the original names except inside the Q-Formers, where transformers'
``Blip2QFormerModel`` has its own layout (the rename rules below). Loading reports missing and
unexpected keys in groups and fails on shape mismatches, so a model is never silently half-loaded.
"""

import logging
import re
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

QFORMER_PREFIXES = ("Qformer", "video_Qformer", "audio_Qformer")
# Parameters of the original Q-Formers that the query-only path does not use.
_UNUSED_QFORMER = re.compile(
    r"^(?:{})\.(?:cls\..*|bert\.embeddings\.(?:position_ids|word_embeddings\..*|position_embeddings\..*)"
    r"|bert\.encoder\.layer\.\d+\.(?:intermediate|output)\..*)$".format("|".join(QFORMER_PREFIXES))
)


def original_to_ours(name):
    """One original parameter name → ours, or None when the query-only path has no use for it."""
    if _UNUSED_QFORMER.match(name):
        return None
    prefix = name.split(".", 1)[0]
    if prefix not in QFORMER_PREFIXES or ".bert." not in name:
        return name
    name = name.replace(f"{prefix}.bert.", f"{prefix}.", 1)
    name = name.replace(".embeddings.LayerNorm.", ".layernorm.")
    name = re.sub(r"\.(attention|crossattention)\.self\.", r".\1.attention.", name)
    return name


def ours_to_original(name):
    """The inverse of :func:`original_to_ours` (for saving in the original layout)."""
    prefix = name.split(".", 1)[0]
    if prefix not in QFORMER_PREFIXES:
        return name
    rest = name[len(prefix) + 1:]
    rest = rest.replace("layernorm.", "embeddings.LayerNorm.", 1) if rest.startswith("layernorm.") else rest
    rest = re.sub(r"\.(attention|crossattention)\.attention\.", r".\1.self.", rest)
    return f"{prefix}.bert.{rest}"


def read_state_dict(path, key):
    """A state dict from ``.safetensors`` or a torch checkpoint (``{"model": ...}`` unwrapped)."""
    path = Path(path)
    if path.is_dir():  # a training checkpoint folder, or a run folder (its best, else latest, checkpoint)
        from video_llama.common.checkpointing import BEST, WEIGHTS, resolve_checkpoint

        path = resolve_checkpoint(path, prefer=BEST) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{key}: checkpoint not found: {path}. Set {key} to the file's path, or null.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


def load_trainable_weights(model, path, key="model.ckpt"):
    """Load a checkpoint into ``model``; frozen parts absent from it are expected (they come from
    their own files), anything else missing or unexpected is an error naming the keys."""
    state = {}
    for name, tensor in read_state_dict(path, key).items():
        ours = original_to_ours(name)
        if ours is not None:
            state[ours] = tensor
    own = model.state_dict()
    mismatched = [f"{n}: checkpoint {tuple(t.shape)} vs model {tuple(own[n].shape)}"
                  for n, t in state.items() if n in own and own[n].shape != t.shape]
    if mismatched:
        raise ValueError(f"{key}: {path} does not fit this model's sizes:\n  " + "\n  ".join(mismatched))
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f"{key}: {path} has {len(unexpected)} parameter(s) this model does not have, e.g. "
                         f"{unexpected[:5]}; is it a checkpoint of another architecture?")
    missing = set(own) - set(state)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing_trainable = sorted(missing & trainable)
    if missing_trainable:
        raise ValueError(f"{key}: {path} lacks {len(missing_trainable)} trainable parameter(s), e.g. "
                         f"{missing_trainable[:5]}; it would leave them randomly initialised")
    model.load_state_dict(state, strict=False)
    logger.info("loaded %d tensors from %s (%d frozen tensors come from their own weights)",
                len(state), path, len(missing))
