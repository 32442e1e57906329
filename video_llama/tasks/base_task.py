"""Tasks connect a config to a model and datasets, and define one training step."""

import logging

from video_llama.common.registry import registry

logger = logging.getLogger(__name__)


class BaseTask:
    @classmethod
    def setup_task(cls, cfg=None):
        return cls()

    def build_model(self, cfg):
        model_cfg = cfg.model_cfg
        return registry.get_model_class(model_cfg.arch).from_config(model_cfg)

    def build_datasets(self, cfg):
        """{dataset name: {split: dataset}} for every entry of ``datasets:``."""
        datasets = {}
        for name, dataset_cfg in cfg.datasets_cfg.items():
            datasets[name] = registry.get_builder_class(name)(dataset_cfg).build_datasets()
        return datasets

    def train_step(self, model, samples):
        return model(samples)["loss"]


@registry.register_task("video_text_pretrain")
class VideoTextPretrainTask(BaseTask):
    """Video-text training (captions or instructions): next-token loss on the answer."""


@registry.register_task("image_text_pretrain")
class ImageTextPretrainTask(BaseTask):
    """Image-text training: the same loss, images being one-frame videos."""
