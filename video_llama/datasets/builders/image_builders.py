"""Builders for image data: caption tars as the original's ``cc_sbu`` and ``laion``."""

from video_llama.common.registry import registry
from video_llama.datasets.builders.base_builder import BaseDatasetBuilder
from video_llama.datasets.builders.video_builders import build_caption_dataset
from video_llama.datasets.datasets.base_video_dataset import AnnotationError
from video_llama.datasets.datasets.image_caption_dataset import ImageCaptionDataset


@registry.register_builder("cc_sbu")
class CCSBUBuilder(BaseDatasetBuilder):
    """Image captions in WebDataset tars (the original's Conceptual Captions + SBU set): images are
    one-frame videos, each caption the answer to a random prompt of ``prompt_path`` (or, without
    one, straight after the image tokens). Reads ``build_info.shards`` only."""

    name = "cc_sbu"
    DATASET_CONFIG_DICT = {"default": "datasets/cc_sbu/defaults.yaml"}
    DATA_TYPES = ("images",)

    def build_datasets(self):
        if not self.config.build_info.get("shards"):
            raise AnnotationError(f"datasets.{self.name}.build_info.shards is not set: point it at the image tars, "
                                  "e.g. \"cc_sbu/{00000..01254}.tar\" (the original's build_info.storage)")
        return super().build_datasets()

    def build_split(self, split, anno_files):
        return build_caption_dataset(self, ImageCaptionDataset, [], split, self.name)


@registry.register_builder("laion")
class LaionBuilder(CCSBUBuilder):
    """LAION image captions in WebDataset tars (img2dataset's jpg + txt + json), read as ``cc_sbu``."""

    name = "laion"
    DATASET_CONFIG_DICT = {"default": "datasets/laion/defaults.yaml"}
