"""Text to token ids the way the original Video-LLaMA's tokenizer made them.

The published checkpoints were trained on the ids of transformers 4.28's slow LlamaTokenizer, and
today's tokenizers give other ids for the same text in two places (the reference ids, produced by
running the original code, are in ``tests/data/original_ids/``):

1. It cut the text at special and added tokens (``<s>``, ``</s>``, ``<ImageHere>``) and encoded
   every other segment on its own, each with SentencePiece's dummy prefix ``▁``: the text after the
   placeholder run starts ``▁</Video>``, and ``[INST]`` after ``<s>`` starts ``▁[``.
2. Next to a special token that the tokenizer folder declares as a plain string, and next to tokens
   added with ``add_tokens``, it removed the whitespace; a token declared as an ``AddedToken`` keeps
   it unless its ``lstrip``/``rstrip`` say otherwise. So llama_v2's `` {a} </s>`` ends in a ``▁``
   token with Llama-2-chat's folder (AddedToken) and not with a folder of plain strings (older
   conversions, and what transformers 5 writes): each model sees the ids it was trained on.

Both rules are the original's for the SentencePiece tokenizers it was made for (LLaMA, Vicuna).
Any other tokenizer (a byte-level BPE, say) encodes the whole text itself, special tokens
included, as its own chat templates expect: rule 2 would take the newlines between such a
tokenizer's turn markers away.
"""

import json
import re
from pathlib import Path

# Written into the weights of every checkpoint we train (safetensors metadata): the text path its
# model learned from. Checkpoints from before 2026-12-06 lack it; their prompts were tokenised
# without rules 1 and 2, so they are now asked with slightly other ids (see OLDER_IDS_WARNING).
TEXT_IDS_KEY, TEXT_IDS = "video_llama.text_ids", "original-segments"
OLDER_IDS_WARNING = ("was trained before video_llama tokenised prompts as the original did (2026-12-06): it is now "
                     "asked with slightly different ids (a '▁' after <s> and <ImageHere>, none before a plain-string "
                     "</s>), so its answers may be worse than when it was evaluated; retrain it (make quickstart "
                     "retrains its model) or evaluate it with the video_llama it was trained with")

# where a tokenizer folder declares its special tokens; the later file wins, as in transformers 4.28
DECLARATION_FILES = ("tokenizer_config.json", "special_tokens_map.json")
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class SegmentEncoder:
    """``encode(text)`` → (ids, the character offset in ``text`` where each token starts)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        declared = _declared_special_tokens(getattr(tokenizer, "name_or_path", ""))
        tokens = {*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()}
        # (strip the whitespace before it, after it); plain or undeclared tokens strip both sides
        self.strips = {token: declared.get(token, (True, True)) for token in tokens if token}
        tokens_longest_first = "|".join(re.escape(t) for t in sorted(self.strips, key=len, reverse=True))
        self.split = re.compile(f"({tokens_longest_first or '(?!)'})")  # (?!) matches nothing
        self.sentencepiece = _adds_prefix_only_when_missing(tokenizer)

    @classmethod
    def of(cls, tokenizer):
        """The encoder of ``tokenizer``, made once and kept on it (it reads the tokenizer's folder)."""
        vocab_size = len(tokenizer)
        cached = getattr(tokenizer, "_video_llama_segment_encoder", None)
        if cached is None or cached[0] != vocab_size:  # tokens added since: make it again
            cached = (vocab_size, cls(tokenizer))
            tokenizer._video_llama_segment_encoder = cached
        return cached[1]

    def segments(self, text):
        """[(start, end, is_token)] of ``text``: the special and added tokens, and the text between
        them with the whitespace rule 2 removes taken off."""
        parts, position = [], 0
        for i, piece in enumerate(self.split.split(text)):
            parts.append([position, position + len(piece), i % 2 == 1])
            position += len(piece)
        for i, (start, end, is_token) in enumerate(parts):
            if not is_token:
                continue
            strip_before, strip_after = self.strips[text[start:end]]
            if strip_before and i > 0:
                before = parts[i - 1]
                before[1] = before[0] + len(text[before[0]:before[1]].rstrip())
            if strip_after and i + 1 < len(parts):
                after = parts[i + 1]
                after[0] = after[1] - len(text[after[0]:after[1]].lstrip())
        return [tuple(part) for part in parts if part[1] > part[0]]

    def encode(self, text):
        if not self.sentencepiece:
            return self._encode(text, 0, "")
        ids, starts = [], []
        for start, end, is_token in self.segments(text):
            if is_token:
                ids.append(self.tokenizer.convert_tokens_to_ids(text[start:end]))
                starts.append(start)
            else:  # SentencePiece put "▁" before every segment; the tokenizer, only before one without a space
                more_ids, more_starts = self._encode(text[start:end], start, " ")
                ids, starts = ids + more_ids, starts + more_starts
        return ids, starts

    def _encode(self, text, offset, prefix):
        """(ids, starts) of ``prefix + text`` by the tokenizer itself, starts counted from ``offset``
        in the caller's text (the prefix's own characters map to the text's start)."""
        encoded = self.tokenizer(prefix + text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded.input_ids), [offset + max(begin - len(prefix), 0) for begin, _ in encoded.offset_mapping]


def _declared_special_tokens(folder):
    """{token: (strip before, strip after)} of the special tokens a tokenizer folder declares as
    AddedTokens (a plain string declaration is absent: it strips both sides)."""
    declared = {}
    for name in DECLARATION_FILES:
        path = Path(folder) / name if folder else None
        if not path or not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue  # loading the tokenizer reports a broken file; here it only decides whitespace
        values = [config.get(key) for key in SPECIAL_KEYS] + list(config.get("additional_special_tokens") or [])
        for value in values:
            if isinstance(value, dict) and value.get("content"):
                declared[value["content"]] = (bool(value.get("lstrip")), bool(value.get("rstrip")))
            elif isinstance(value, str):
                declared.pop(value, None)
    return declared


def _adds_prefix_only_when_missing(tokenizer):
    """Whether the tokenizer puts SentencePiece's ``▁`` before a text only when the text does not
    start with a space (a Metaspace pre-tokenizer), where SentencePiece always put one: such a
    tokenizer is given each segment with a space in front."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre_tokenizer = getattr(backend, "pre_tokenizer", None)
    return type(pre_tokenizer).__name__ == "Metaspace" and str(getattr(pre_tokenizer, "prepend_scheme", "never")) != "never"
