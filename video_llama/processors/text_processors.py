"""Caption cleaning (applied to captions only, never to instruction answers such as labels)."""

import dataclasses
import re

from video_llama.common.registry import registry
from video_llama.processors.base_processor import BaseProcessor


@dataclasses.dataclass
class CaptionConfig:
    prompt: str = ""  # prepended to every caption
    max_words: int = 50


@registry.register_processor("blip_caption")
class BlipCaptionProcessor(BaseProcessor):
    """Lower-case, drop punctuation that BLIP's captions were trained without, cap the length."""

    Config = CaptionConfig

    def __call__(self, caption):
        caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
        caption = re.sub(r"\s{2,}", " ", caption).strip()
        words = caption.split(" ")
        caption = " ".join(words[: self.config.max_words])
        return self.config.prompt + caption
