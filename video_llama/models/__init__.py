"""Models; importing this package registers the built-in ones."""

from video_llama.models.base_model import BaseModel
from video_llama.models.video_llama import VideoLLAMA

__all__ = ["BaseModel", "VideoLLAMA"]
