"""Dataset builders; importing this package registers the built-in ones."""

from video_llama.datasets.builders.base_builder import BaseDatasetBuilder
from video_llama.datasets.builders.image_builders import CCSBUBuilder, LaionBuilder
from video_llama.datasets.builders.video_builders import VideoInstructBuilder, WebvidBuilder

__all__ = ["BaseDatasetBuilder", "CCSBUBuilder", "LaionBuilder", "VideoInstructBuilder", "WebvidBuilder"]
