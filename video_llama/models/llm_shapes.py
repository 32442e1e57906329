"""An LLM's configuration without its weights, so that a model can be shaped (the memory planner,
the full-size shape checks) on a machine that has never downloaded it."""

import re
from pathlib import Path

from video_llama.common.errors import UserError

# the shapes of the LLaMA checkpoints the published recipes name (Llama-2-*-chat-hf and Vicuna of the
# same sizes; their config.json): what memory and FLOPs depend on
PUBLISHED_LLAMA = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40),
}
LLAMA_VOCAB = 32000


def published_llama_config(size):
    """The ``transformers`` config of the published LLaMA of ``size`` ("7b" or "13b")."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=LLAMA_VOCAB, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       **PUBLISHED_LLAMA[size])


def llm_config(name_or_path, key="model.llama_model"):
    """The configuration of ``name_or_path``: a folder's config.json, a hub id's in the local
    Hugging Face cache, or else the published LLaMA shape whose size a LLaMA or Vicuna name says
    (…llama-2-7b…, …vicuna-13b…). Never downloads.

    Returns:
        (config, where it came from: a path, or "published <size> shape")
    """
    from transformers import AutoConfig

    path = Path(str(name_or_path)).expanduser()
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path), str(path / "config.json")
    try:
        return AutoConfig.from_pretrained(str(name_or_path), local_files_only=True), f"{name_or_path} (HF cache)"
    except (OSError, ValueError):
        pass
    name = path.name.lower()
    size = re.search(r"(?<![0-9.])(7|13)b(?![a-z])", name)
    if size and ("llama" in name or "vicuna" in name):  # another family of that size has other shapes
        return published_llama_config(f"{size.group(1)}b"), f"the published LLaMA {size.group(1)}B shape"
    raise UserError(f"{key}: {name_or_path!r} has no config.json here and is not in the Hugging Face cache, and its "
                    f"name is not that of a published LLaMA or Vicuna of {' or '.join(PUBLISHED_LLAMA)}; copy the model's "
                    f"config.json (a few KB) into a folder and set {key} to it")
