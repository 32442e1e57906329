"""A video_llama plugin in one file: a builder for ``path,label`` CSV files and a processor.

Importing this module registers both; video_llama imports it through the entry point in
pyproject.toml, or through ``plugins: [path/to/csv_actions.py]`` in an experiment YAML.
"""

import csv
import dataclasses
from pathlib import Path

from video_llama.common.registry import registry
from video_llama.datasets.builders.video_builders import VideoInstructBuilder
from video_llama.processors.video_processors import AlproVideoTrainProcessor, VideoTrainProcessorConfig


@registry.register_builder("csv_actions")
class CsvActionsBuilder(VideoInstructBuilder):
    """Rows ``path,label``; every clip is asked ``question`` (a key of csv_actions.yaml)."""

    DATASET_CONFIG_DICT = {"default": str(Path(__file__).with_name("csv_actions.yaml"))}

    def read_annotations(self, anno_files):
        records = []
        for path in anno_files:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    records.append({"video": row["path"], "QA": [{"q": self.config.question, "a": row["label"]}]})
        return records


@dataclasses.dataclass
class GrayVideoConfig(VideoTrainProcessorConfig):
    keep_color_share: float = 0.0  # 0 = fully gray, 1 = unchanged


@registry.register_processor("gray_video_train")
class GrayVideoTrainProcessor(AlproVideoTrainProcessor):
    """The standard training processor, then colour removed (colour must not give the label away)."""

    Config = GrayVideoConfig

    def augment(self, frames):
        frames = super().augment(frames).float()
        gray = frames.mean(dim=0, keepdim=True).expand_as(frames)
        share = self.config.keep_color_share
        return share * frames + (1 - share) * gray
