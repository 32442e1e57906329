"""The LLM's tokenizer as every part of the package uses it, and caption prompt files."""

from video_llama.common.hub import resolve_pretrained
from video_llama.conversation.templates import IMAGE_PATCH_TOKEN


def load_tokenizer(name_or_path, key="datasets.*.tokenizer_name"):
    """The LLM's tokenizer with the <ImageHere> placeholder token; pads on the right with <unk>.

    ``key`` is the config key that named it, so that a missing folder is reported against it.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(name_or_path, key))
    tokenizer.add_tokens([IMAGE_PATCH_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_prompts(prompt_path):
    """The prompts of a caption prompt file (one per line; lines without <ImageHere> are skipped)."""
    if not prompt_path:
        return []
    with open(prompt_path) as f:
        return [line.strip() for line in f if IMAGE_PATCH_TOKEN in line]
