"""Tasks; importing this package registers the built-in ones."""

from video_llama.tasks.base_task import BaseTask, ImageTextPretrainTask, VideoTextPretrainTask

__all__ = ["BaseTask", "ImageTextPretrainTask", "VideoTextPretrainTask"]
