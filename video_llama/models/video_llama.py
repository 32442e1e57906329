"""Video-LLaMA, vision-language branch."""

from video_llama.common.registry import registry
from video_llama.models.base_model import BaseModel


@registry.register_model("video_llama")
class VideoLLAMA(BaseModel):
    BASE_CONFIG_PATH = "models/video_llama/base.yaml"
    DEFAULT_MODEL_TYPE = "pretrain_llama_v2"
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_llama_v2": "models/video_llama/pretrain_llama_v2.yaml",
        "pretrain_vicuna": "models/video_llama/pretrain_vicuna.yaml",
        "tiny": "models/video_llama/tiny.yaml",
    }
