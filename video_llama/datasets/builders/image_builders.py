"""Builders for image data, images being one-frame videos: caption tars as the original's ``cc_sbu``
and ``laion``, its ``cc_sbu_align`` folder, LLaVA-Instruct (``llava_instruct``) and the guide's
format for your own images (``image_instruct``)."""

from pathlib import Path

from video_llama.common.registry import registry
from video_llama.datasets.builders.base_builder import BaseDatasetBuilder
from video_llama.datasets.builders.video_builders import VideoInstructBuilder, build_caption_dataset
from video_llama.datasets.datasets.base_video_dataset import AnnotationError
from video_llama.datasets.datasets.image_caption_dataset import ImageCaptionDataset
from video_llama.datasets.datasets.image_instruct_dataset import (
    ImageInstructDataset,
    read_cc_sbu_align,
    read_llava_annotations,
)
from video_llama.datasets.datasets.video_instruct_dataset import read_instruct_annotations


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


@registry.register_builder("cc_sbu_align")
class CCSBUAlignBuilder(BaseDatasetBuilder):
    """The original's stage-2 image captions: ``build_info.storage`` holds ``filter_cap.json`` and
    ``image/<image_id>.jpg``; each caption answers a random prompt of ``prompt_path``."""

    name = "cc_sbu_align"
    DATASET_CONFIG_DICT = {"default": "datasets/cc_sbu_align/defaults.yaml"}
    DATA_TYPES = ("images",)

    @classmethod
    def split_files(cls, build_info):
        storage = build_info.get("storage") if build_info is not None else None
        return {"train": [str(Path(storage) / "filter_cap.json")]} if storage else {}

    def videos_dir(self):
        return self.config.build_info.storage

    def build_datasets(self):
        storage = self.config.build_info.get("storage")
        if not storage or not Path(storage).is_dir():
            raise AnnotationError(f"datasets.{self.name}.build_info.storage: {storage} is not a folder; point it at "
                                  "cc_sbu_align (filter_cap.json + image/)")
        return super().build_datasets()

    def build_split(self, split, anno_files):
        return build_caption_dataset(self, ImageCaptionDataset, read_cc_sbu_align(self.config.build_info.storage),
                                     split, self.name)


@registry.register_builder("image_instruct")
class ImageInstructBuilder(VideoInstructBuilder):
    """Your own images in the guide's format: ``[{"image": path relative to videos_dir, "QA": [...]}]``
    (``video-llama prepare --images`` writes it from a folder per class)."""

    name = "image_instruct"
    DATASET_CONFIG_DICT = {"default": "datasets/image_instruct/defaults.yaml"}
    DATA_TYPES = ("images",)
    dataset_class = ImageInstructDataset

    def read_annotations(self, anno_files):
        return read_instruct_annotations(anno_files, key="image")


@registry.register_builder("llava_instruct")
class LlavaInstructBuilder(ImageInstructBuilder):
    """LLaVA-Instruct-150K: ``{"image", "conversations": [{"from": "human"|"gpt", "value"}]}``, the
    images under ``videos_dir`` named ``image_prefix`` + ``image`` (COCO's ``COCO_train2014_``)."""

    name = "llava_instruct"
    DATASET_CONFIG_DICT = {"default": "datasets/llava_instruct/defaults.yaml"}

    def read_annotations(self, anno_files):
        return read_llava_annotations(anno_files, self.config.get("image_prefix") or "")
