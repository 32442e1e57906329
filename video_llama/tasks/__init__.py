"""Tasks; importing this package registers the built-in ones."""

from video_llama.tasks.action_recognition import ActionRecognitionTask
from video_llama.tasks.base_task import BaseTask, ImageTextPretrainTask, VideoTextPretrainTask

__all__ = ["ActionRecognitionTask", "BaseTask", "ImageTextPretrainTask", "VideoTextPretrainTask"]
