"""Processors; importing this package registers the built-in ones."""

from video_llama.processors.base_processor import BaseProcessor
from video_llama.processors.image_processors import Blip2ImageEvalProcessor, Blip2ImageTrainProcessor
from video_llama.processors.text_processors import BlipCaptionProcessor
from video_llama.processors.video_processors import AlproVideoEvalProcessor, AlproVideoTrainProcessor, BaseVideoProcessor

__all__ = [
    "AlproVideoEvalProcessor",
    "AlproVideoTrainProcessor",
    "BaseProcessor",
    "BaseVideoProcessor",
    "Blip2ImageEvalProcessor",
    "Blip2ImageTrainProcessor",
    "BlipCaptionProcessor",
]
