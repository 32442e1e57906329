"""Builders for video data: instruction JSON (``webvid_instruct``) and caption CSV (``webvid``)."""

from video_llama.common.registry import registry
from video_llama.datasets.builders.base_builder import BaseDatasetBuilder


@registry.register_builder("webvid_instruct")
class WebvidInstructBuilder(BaseDatasetBuilder):
    DATASET_CONFIG_DICT = {"default": "datasets/webvid_instruct/defaults.yaml"}


@registry.register_builder("webvid")
class WebvidBuilder(BaseDatasetBuilder):
    DATASET_CONFIG_DICT = {"default": "datasets/webvid/defaults.yaml"}
