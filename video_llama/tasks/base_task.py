"""Tasks connect a config to a model and datasets, and define one training step."""

import logging

import torch

from video_llama.common import dist_utils
from video_llama.common.registry import registry
from video_llama.processors.pixel_plan import batch_to_device

logger = logging.getLogger(__name__)


class BaseTask:
    @classmethod
    def setup_task(cls, cfg=None):
        return cls()

    def build_model(self, cfg):
        model_cfg = cfg.model_cfg
        return registry.get_model_class(model_cfg.arch).from_config(model_cfg)

    def build_datasets(self, cfg, splits=None):
        """{dataset name: {split: dataset}} for every entry of ``datasets:``; with ``splits``, only
        those (an evaluation builds no train split: not its records, nor settings only training needs)."""
        datasets = {}
        for name, dataset_cfg in cfg.datasets_cfg.items():
            builder = registry.get_builder_class(name)(dataset_cfg)
            builder.wanted_splits = splits
            built = builder.build_datasets()  # a LAVIS-style plugin builder may build every split anyway
            datasets[name] = {split: d for split, d in built.items() if splits is None or split in splits}
        return datasets

    def trained_labels(self, run_cfg, datasets):
        """The answers a model trained on ``datasets`` chooses among, for its run folder to keep
        (``labels.json``); None for a task without a closed label set."""
        return None

    def train_step(self, model, samples, num_items_in_batch=None):
        """The loss of one batch (see ``VideoLLAMA.forward`` for ``num_items_in_batch``)."""
        if num_items_in_batch is None:
            return model(samples)["loss"]
        return model(samples, num_items_in_batch=num_items_in_batch)["loss"]

    @torch.no_grad()
    def evaluate_split(self, model, loader, run_cfg, split, out_dir, dataset):
        """Mean loss over this rank's share of a split, averaged over ranks."""
        device = next(model.parameters()).device
        losses = [self.train_step(model, batch_to_device(batch, device)).item()  # unreadable clips are left out
                  for batch in loader if "image" in batch or "frame_features" in batch]
        return {f"{split}_loss": dist_utils.all_reduce_mean(sum(losses) / max(1, len(losses)))}


@registry.register_task("video_text_pretrain")
class VideoTextPretrainTask(BaseTask):
    """Video-text training (captions or instructions): next-token loss on the answer."""


@registry.register_task("image_text_pretrain")
class ImageTextPretrainTask(BaseTask):
    """Image-text training: the same loss, images being one-frame videos."""
