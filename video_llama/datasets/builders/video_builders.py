"""Builders for video data: instruction JSON (``webvid_instruct``, ``webvid_instruct_zh``) and caption
CSV (``webvid``)."""

from video_llama.common.registry import registry
from video_llama.conversation import get_template, load_prompts, load_tokenizer
from video_llama.datasets.builders.base_builder import BaseDatasetBuilder
from video_llama.datasets.datasets.base_video_dataset import AnnotationError
from video_llama.datasets.datasets.straddle import Straddle
from video_llama.datasets.datasets.video_caption_dataset import VideoCaptionDataset, read_caption_csv
from video_llama.datasets.datasets.video_instruct_dataset import VideoInstructDataset, read_instruct_annotations


@registry.register_builder("webvid_instruct")
class VideoInstructBuilder(BaseDatasetBuilder):
    """Video instruction data. The base for new annotation formats: a subclass overrides
    :meth:`read_annotations` and names its default YAML (only the keys it adds); videos,
    processors, templates, truncation and distributed loading come from here."""

    name = "webvid_instruct"
    DATASET_CONFIG_DICT = {"default": "datasets/webvid_instruct/defaults.yaml"}
    DATA_TYPES = ("video", "video_cn")
    dataset_class = VideoInstructDataset

    def read_annotations(self, anno_files):
        """[{"video": path relative to videos_dir, "QA": [{"q": ..., "a": ...}, ...]}, ...]"""
        return read_instruct_annotations(anno_files)

    def build_split(self, split, anno_files):
        cfg = self.config
        processor = self.processor("vis_processor", split)
        return self.dataset_class(
            self.without_quarantined(self.read_annotations(anno_files)),
            self.videos_dir(),
            processor,
            load_tokenizer(cfg.tokenizer_name),
            template=get_template(cfg.model_type),
            num_video_query_token=cfg.num_video_query_token,
            max_seq_len=cfg.max_seq_len,
            max_failed_ratio=cfg.max_failed_ratio,
            name=f"{self.name}/{split}",
            anno_files=anno_files,
            timestamps=cfg.timestamps and "cn" not in cfg.data_type,  # the original has none for Chinese data
            straddle=self.straddle(split, processor, anno_files),
        )

    def straddle(self, split, processor, anno_files):
        """The split's :class:`Straddle` settings; a ratio that cannot work is refused at start-up."""
        cfg = self.config
        if not (cfg.straddle_ratio or cfg.stop_ratio) or split not in cfg.straddle_splits:
            return Straddle()
        key = "straddle_ratio" if cfg.straddle_ratio else "stop_ratio"
        if not getattr(getattr(processor, "config", None), "window_s", 0):
            raise AnnotationError(f"{self.name}: {key}={cfg[key]} cuts windows over a change, but vis_processor "
                                  f"({split}) takes whole clips; set its window_s (seconds, e.g. 2.0)")
        if not anno_files:
            raise AnnotationError(f"{self.name}: {key} needs clips it can draw at random (build_info.anno_dir); "
                                  f"shards are read in order: set {key}: 0 for them")
        try:
            return Straddle(cfg.straddle_ratio, cfg.straddle_label_span, cfg.stop_ratio, cfg.rest_answer,
                            cfg.straddle_same_answer)
        except ValueError as err:
            raise AnnotationError(f"{self.name}: {err}") from None


@registry.register_builder("webvid_instruct_zh")
class VideoInstructZhBuilder(VideoInstructBuilder):
    """The original's Chinese video instructions: the same data path, without the timestamp sentence."""

    name = "webvid_instruct_zh"
    DATASET_CONFIG_DICT = {"default": "datasets/webvid_instruct_zh/defaults.yaml"}


@registry.register_builder("webvid")
class WebvidBuilder(BaseDatasetBuilder):
    """WebVid captions: each caption answers a random prompt of ``prompt_path``."""

    DATASET_CONFIG_DICT = {"default": "datasets/webvid/defaults.yaml"}
    DATA_TYPES = ("video",)
    ANNOTATION_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}

    def build_split(self, split, anno_files):
        return build_caption_dataset(self, VideoCaptionDataset, read_caption_csv(anno_files), split, "webvid")


def build_caption_dataset(builder, dataset_class, records, split, name):
    """A caption dataset (video or image) of ``records`` with ``builder``'s processors and text settings."""
    cfg = builder.config
    return dataset_class(
        records,
        builder.videos_dir(),
        builder.processor("vis_processor", split),
        builder.processor("text_processor", split),
        load_tokenizer(cfg.tokenizer_name),
        template=get_template(cfg.model_type),
        prompts=load_prompts(cfg.prompt_path),
        prompt_template=cfg.prompt_template,
        num_video_query_token=cfg.num_video_query_token,
        max_txt_len=cfg.max_txt_len,
        max_failed_ratio=cfg.max_failed_ratio,
        name=f"{name}/{split}",
    )
