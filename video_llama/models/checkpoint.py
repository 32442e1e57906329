"""Weights in and out, in one place: the original LAVIS / Video-LLaMA names, Hugging Face BLIP-2
names, and this project's modules.

Our modules keep the original names except inside the Q-Formers (transformers'
``Blip2QFormerModel`` has its own layout) and, for Hugging Face BLIP-2 files, the vision tower
(HF's ``Blip2VisionModel`` names vs timm's EVA names, which are the original ones). Loading
reports what it took, what was expected to be absent, and what it did not use; it fails on
shape mismatches and on missing weights that the checkpoint was supposed to provide, so a model
is never silently half-loaded.

Original → ours (Q-Formers; ``P`` is ``Qformer``, ``video_Qformer`` or ``audio_Qformer``)::

    P.bert.embeddings.LayerNorm.*                      → P.layernorm.*
    P.bert.encoder.layer.N.attention.self.{q,k,v}      → P.encoder.layer.N.attention.attention.*
    P.bert.encoder.layer.N.crossattention.self.*       → P.encoder.layer.N.crossattention.attention.*
    P.bert.encoder.layer.N.<everything else>           → P.encoder.layer.N.<same>
    dropped: P.bert.embeddings.{word_embeddings, position_embeddings}, P.cls.*,
             P.bert.encoder.layer.N.{intermediate, output}.* (the unused text path)

Derived buffers, ignored by name (listed in the log): a buffer the architecture recomputes holds
nothing a checkpoint could change. The original training runner saves ``{"model": ..., "optimizer",
"config", "scaler", "epoch"}`` as ``checkpoint_N.pth`` and keeps every buffer of its model (it drops
only frozen *parameters*), so a model finetuned by the original code comes with::

    P.bert.embeddings.position_ids                     (BERT's arange(512))
    llama_model.*.rotary_emb.{inv_freq, cos_cached, sin_cached}   (from rope_theta and the head size)
    llama_model.*.{SCB, weight_format}                 (bitsandbytes' 8-bit state of the frozen LLM)

Only its ``model`` entry is read; every other name must be a weight of this model with its shape.

Hugging Face BLIP-2 → ours::

    vision_model.embeddings.{class_embedding, position_embedding, patch_embedding}
                                                       → visual_encoder.{cls_token, pos_embed, patch_embed.proj}
    vision_model.encoder.layers.N.self_attn.{qkv, projection, q_bias, v_bias}
                                                       → visual_encoder.blocks.N.attn.{qkv, proj, q_bias, v_bias}
    vision_model.encoder.layers.N.{layer_norm1, layer_norm2, mlp}
                                                       → visual_encoder.blocks.N.{norm1, norm2, mlp}
    vision_model.post_layernorm                        → ln_vision
    qformer.*                                          → Qformer.*   (same layout)
    query_tokens                                       → query_tokens
    dropped: language_model.*, language_projection.*
"""

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from video_llama.common.errors import CheckpointError

logger = logging.getLogger(__name__)

RANDOM = "random"  # a weights key's value that keeps its part untrained on purpose (model.ckpt, vit_ckpt, ...)
QFORMER_PREFIXES = ("Qformer", "video_Qformer", "audio_Qformer")
POSITION_IDS_LENGTH = 512  # bert-base's position_ids buffer, which published checkpoints carry
_UNUSED_QFORMER = re.compile(
    r"^(?:{})\.(?:cls\..*|bert\.embeddings\.(?:word_embeddings\..*|position_embeddings\..*)"
    r"|bert\.encoder\.layer\.\d+\.(?:intermediate|output)\..*)$".format("|".join(QFORMER_PREFIXES))
)
_DERIVED_BUFFERS = re.compile(
    r"^(?:{})\.bert\.embeddings\.position_ids$".format("|".join(QFORMER_PREFIXES))
    + r"|^llama_model\..*\.rotary_emb\.(?:inv_freq|cos_cached|sin_cached)$"
    + r"|^llama_model\..*\.(?:SCB|weight_format)$"
)
_HF_VISION = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.", r"visual_encoder.blocks.\1.attn."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "ln_vision."),
    (r"^qformer\.", "Qformer."),
    (r"^query_tokens$", "query_tokens"),
]


# ---------------------------------------------------------------------------- name mappings


def is_derived_buffer(name):
    """Whether ``name`` (original layout) is a buffer the model recomputes (see the module docs)."""
    return bool(_DERIVED_BUFFERS.match(name))


def original_to_ours(name):
    """One original parameter name → ours, or None when the query-only path has no use for it or
    it is a derived buffer."""
    if _UNUSED_QFORMER.match(name) or is_derived_buffer(name):
        return None
    prefix = name.split(".", 1)[0]
    if prefix not in QFORMER_PREFIXES or ".bert." not in name:
        return name
    name = name.replace(f"{prefix}.bert.", f"{prefix}.", 1)
    name = name.replace(".embeddings.LayerNorm.", ".layernorm.")
    return re.sub(r"\.(attention|crossattention)\.self\.", r".\1.attention.", name)


def ours_to_original(name):
    """The inverse of :func:`original_to_ours`."""
    prefix = name.split(".", 1)[0]
    if prefix not in QFORMER_PREFIXES:
        return name
    rest = name[len(prefix) + 1:]
    if rest.startswith("layernorm."):
        rest = "embeddings.LayerNorm." + rest[len("layernorm."):]
    rest = re.sub(r"\.(attention|crossattention)\.attention\.", r".\1.self.", rest)
    return f"{prefix}.bert.{rest}"


def hf_blip2_to_ours(name, tensor):
    """[(our name, tensor)] for one Hugging Face BLIP-2 tensor; [] when we have no use for it.
    A fused ``qkv.bias`` is split into EVA's ``q_bias``/``v_bias`` (its key part is zero)."""
    for pattern, replacement in _HF_VISION:
        if re.search(pattern, name):
            ours = re.sub(pattern, replacement, name)
            if ours.endswith(".attn.qkv.bias"):
                q, k, v = tensor.chunk(3)
                if k.abs().max() > 0:
                    raise ValueError(f"{name}: EVA attention has no key bias, but this one is non-zero")
                base = ours[: -len("qkv.bias")]
                return [(base + "q_bias", q), (base + "v_bias", v)]
            if ours == "visual_encoder.cls_token" and tensor.dim() == 1:
                tensor = tensor.view(1, 1, -1)
            return [(ours, tensor)]
    return []


def to_ours(state):
    """A state dict in any supported layout → (our names → tensors, [names not used])."""
    layout = detect_layout(state)
    ours, unused = {}, []
    for name, tensor in state.items():
        if layout == "hf_blip2":
            mapped = hf_blip2_to_ours(name, tensor)
        else:
            target = original_to_ours(name)
            mapped = [(target, tensor)] if target else []
        if not mapped:
            unused.append(name)
        ours.update(mapped)
    return ours, unused


def to_original(state):
    """Our names → the original layout, with the ``position_ids`` buffer the originals carry, so
    that original → ours → original reproduces a published checkpoint exactly."""
    original = {ours_to_original(name): tensor for name, tensor in state.items()}
    for prefix in QFORMER_PREFIXES:
        if any(name.startswith(prefix + ".") for name in state):
            original[f"{prefix}.bert.embeddings.position_ids"] = torch.arange(POSITION_IDS_LENGTH).unsqueeze(0)
    return original


def detect_layout(state):
    if any(name.startswith(("vision_model.", "qformer.", "language_model.")) for name in state):
        return "hf_blip2"
    return "original"  # ours is the original layout outside the Q-Formers, and mapping ours is a no-op


# ---------------------------------------------------------------------------- reading files


def read_state_dict(path, key, wanted_prefixes=None):
    """A state dict from ``.pth``/``.bin`` (``{"model": ...}`` unwrapped, e.g. the original
    runner's ``checkpoint_N.pth``), ``.safetensors``, a Hugging Face folder (sharded or not; only
    ``wanted_prefixes`` are read), or one of our training checkpoint/run folders (its best, else
    latest, checkpoint)."""
    path = Path(path)
    if path.is_dir():
        from video_llama.common.run_folder import BEST, LATEST, STATE, WEIGHTS, RunFolder, resolve_checkpoint

        if (path / STATE).is_file() or (path / LATEST).is_file():  # ours; a HF folder has neither
            folder = resolve_checkpoint(path, prefer=BEST, key=key)
            if folder != path:  # which weights a run folder means is worth a line: the best, else the latest
                logger.info("%s: run folder %s: loading %s", key, path, RunFolder(path).describe(folder))
            path = folder / WEIGHTS
            _warn_if_older_text_ids(path, key)
        else:
            return _read_hf_folder(path, key, wanted_prefixes)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: checkpoint not found: {path}. Set {key} to the file's path, or null.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated downloads, foreign pickles, wrong formats
        raise CheckpointError(f"{key}: {path} cannot be read ({type(err).__name__}: {str(err)[:200]}); "
                              "download it again or point the key at another file") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        if "optimizer" in state:  # a training runner's checkpoint: what it brings and what it does not
            logger.info("%s: %s is a training checkpoint (epoch %s); its weights are used, its optimizer state "
                        "and schedule are not (a run started from it begins a new schedule)",
                        key, path, state.get("epoch", "?"))
        return state["model"]
    return state


def _warn_if_older_text_ids(weights_file, key):
    """Warn when one of our checkpoints was trained on prompts tokenised the way we no longer do."""
    from safetensors import safe_open

    from video_llama.conversation.segment_encoding import OLDER_IDS_WARNING, TEXT_IDS_KEY

    try:
        with safe_open(str(weights_file), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception:  # reading the weights reports a broken file
        return
    if TEXT_IDS_KEY not in metadata:
        logger.warning("%s: %s %s", key, weights_file.parent, OLDER_IDS_WARNING)


def _read_hf_folder(folder, key, wanted_prefixes):
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [f.name for f in folder.glob("*.safetensors")]
    if not files:
        raise FileNotFoundError(f"{key}: {folder} holds no .safetensors weights (expected a Hugging Face model folder)")
    state = {}
    for name in files:
        with safe_open(str(folder / name), framework="pt") as f:
            for tensor_name in f.keys():
                if wanted_prefixes is None or tensor_name.startswith(tuple(wanted_prefixes)):
                    state[tensor_name] = f.get_tensor(tensor_name)  # the LLM part is never read
    return state


# ---------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    source: str
    loaded: list = field(default_factory=list)
    absent_expected: list = field(default_factory=list)  # model weights this file is not meant to hold
    unused: list = field(default_factory=list)  # file entries this model does not use
    ignored: list = field(default_factory=list)  # derived buffers: the model recomputes them
    adapted: list = field(default_factory=list)  # e.g. interpolated position embeddings

    def log(self):
        logger.info("%s: loaded %d tensors; %d model tensors come from elsewhere (%s); %d file entries unused (%s)%s%s",
                    self.source, len(self.loaded), len(self.absent_expected), _groups(self.absent_expected),
                    len(self.unused), _groups(self.unused),
                    f"; ignored {len(self.ignored)} derived buffers (the model recomputes them): {_names(self.ignored)}"
                    if self.ignored else "", f"; adapted: {self.adapted}" if self.adapted else "")


def _groups(names):
    counts = {}
    for name in names:
        head = name.split(".")[0]
        counts[head] = counts.get(head, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def _names(names):
    """Names with layer numbers folded (``layers.*``), each with its count: one short line for a
    buffer that every one of 40 layers carries."""
    counts = {}
    for name in names:
        folded = re.sub(r"\.\d+\.", ".*.", name)
        counts[folded] = counts.get(folded, 0) + 1
    return ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in sorted(counts.items()))


def load_weights(model, path, key, required_prefixes=None, wanted_prefixes=None, add_prefix=None,
                 component=False, provided=(), only=None):
    """Load ``path`` (any supported layout) into ``model``.

    Args:
        required_prefixes: names (prefixes) the file must provide completely; None = every
            trainable parameter of the model not in ``provided``.
        wanted_prefixes: for Hugging Face folders, which tensors to read at all.
        add_prefix: put in front of names that lack it (files of one submodule, e.g. a ViT).
        component: a file of pretrained parts (EVA, BLIP-2): heads this model does not have
            (``t5_proj``, ``opt_proj``, ...) are reported as unused instead of failing.
        provided: names earlier files already loaded (``ckpt`` need not hold them again).
        only: take only the modules these (our) name prefixes start, and report the file's other
            entries as unused (``ckpt_2``: a run of ours holds both branches, the audio one is wanted).
    Raises:
        CheckpointError: naming the parameters when shapes disagree, when required weights are
            missing, or (not ``component``) when the file holds weights this model does not have.
    """
    raw = read_state_dict(path, key, wanted_prefixes)
    if add_prefix:
        raw = {n if n.startswith(add_prefix) else add_prefix + n: t for n, t in raw.items()}
    state, unused = to_ours(raw)
    if only is not None:
        unused += [n for n in state if not n.startswith(tuple(only))]
        state = {n: t for n, t in state.items() if n.startswith(tuple(only))}
    own = model.state_dict()
    report = LoadReport(source=f"{key}={path}", unused=[n for n in unused if not is_derived_buffer(n)],
                        ignored=[n for n in unused if is_derived_buffer(n)])

    if "video_frame_position_embedding.weight" in state and "video_frame_position_embedding.weight" in own:
        state["video_frame_position_embedding.weight"] = fit_frame_positions(
            state["video_frame_position_embedding.weight"], own["video_frame_position_embedding.weight"].shape[0], report)
    if "visual_encoder.blocks.39.norm1.weight" in state and "visual_encoder.blocks.39.norm1.weight" not in own:
        # EVA-g checkpoints have 40 blocks; BLIP-2 uses the first 39.
        extra = [n for n in state if n.startswith("visual_encoder.blocks.39.")]
        report.unused += extra
        state = {n: t for n, t in state.items() if n not in extra}

    foreign = sorted(n for n in state if n not in own)
    if foreign and component:
        report.unused += foreign
        state = {n: t for n, t in state.items() if n in own}
    elif foreign and any("lora_" in n for n in foreign):
        ranks = sorted({tuple(state[n].shape)[0] for n in foreign if "lora_A" in n})
        raise CheckpointError(f"{key}: {path} holds LoRA adapters (rank {', '.join(map(str, ranks))}) and this model "
                              f"has none; set model.lora.r={ranks[0] if ranks else 'R'} (and the run's model.lora "
                              "settings), or merge them first: video-llama merge-lora RUN_DIR --out DIR")
    elif foreign:
        raise CheckpointError(f"{key}: {path} holds {len(foreign)} weight(s) this model does not have, e.g. {foreign[:5]}; "
                         "is it a checkpoint of another architecture or size?")
    mismatched = [f"{n}: file {tuple(t.shape)} vs model {tuple(own[n].shape)}" for n, t in state.items()
                  if own[n].shape != t.shape]
    if mismatched:
        raise CheckpointError(f"{key}: {path} does not fit this model's sizes:\n  " + "\n  ".join(mismatched))
    if required_prefixes is None:
        required = {n for n, p in model.named_parameters() if p.requires_grad} - set(provided)
    else:
        required = {n for n in own if n.startswith(tuple(required_prefixes))}
    missing = sorted(required - set(state))
    if missing:
        raise CheckpointError(f"{key}: {path} lacks {len(missing)} weight(s) it should provide, e.g. {missing[:5]}; "
                         "they would stay randomly initialised")
    model.load_state_dict(state, strict=False)
    report.loaded = sorted(state)
    report.absent_expected = sorted(set(own) - set(state))
    report.log()
    return report


def fit_frame_positions(weight, num_positions, report=None):
    """A frame position table for ``num_positions`` frames: linearly interpolated when the model
    wants more positions than the checkpoint has (more frames), the first rows when fewer."""
    if weight.shape[0] == num_positions:
        return weight
    if weight.shape[0] > num_positions:
        fitted = weight[:num_positions]
    else:
        fitted = torch.nn.functional.interpolate(weight.T.unsqueeze(0).float(), size=num_positions, mode="linear",
                                                 align_corners=True)[0].T.to(weight.dtype)
    if report is not None:
        report.adapted.append(f"video_frame_position_embedding {weight.shape[0]} → {num_positions} positions")
    return fitted


def save_original_layout(model, path):
    """The trainable weights in the original Video-LLaMA layout (``{"model": ...}``), for tools
    that expect the published checkpoints' format."""
    state = {n: t.detach().cpu() for n, t in model.checkpoint_state_dict().items()}
    torch.save({"model": to_original(state)}, path)
