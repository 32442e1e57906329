"""video_llama: finetune Video-LLaMA style video-language models on your own videos.

Importing the package registers every built-in model, builder, processor, task, lr schedule and
runner (explicit imports, so that what is registered is visible here).
"""

from video_llama.common.registry import registry

import video_llama.common.optims  # noqa: F401  (lr schedules)
import video_llama.conversation  # noqa: F401  (prompt templates)
import video_llama.datasets.builders  # noqa: F401
import video_llama.models  # noqa: F401
import video_llama.processors  # noqa: F401
import video_llama.runners  # noqa: F401
import video_llama.tasks  # noqa: F401

__version__ = "0.1.0"

__all__ = ["registry", "__version__"]
