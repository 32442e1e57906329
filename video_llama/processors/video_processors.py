"""Video processors: sample and decode frames, augment (train), normalise → float (C, T, H, W)."""

import dataclasses
import math
import random

from video_llama.common.registry import registry
from video_llama.processors.base_processor import BaseProcessor
from video_llama.processors.normalization import CLIP_MEAN, CLIP_STD, normalize, standardize_clip
from video_llama.processors.video_decoding import check_sampling, load_video


@dataclasses.dataclass
class VideoProcessorConfig:
    n_frms: int = 8  # frames sampled per clip
    image_size: int = 224  # frames are resized (in the decoder) to image_size × image_size
    mean: list = dataclasses.field(default_factory=lambda: list(CLIP_MEAN))
    std: list = dataclasses.field(default_factory=lambda: list(CLIP_STD))
    per_clip_norm: bool = False  # standardise each clip instead of mean/std (from-scratch encoders)
    backend: str = "decord"  # decord | pyav
    sampling: str = ""  # uniform | headtail; empty = the processor's own (eval: uniform, train: headtail)


class _VideoProcessor(BaseProcessor):
    sampling = "uniform"
    Config = VideoProcessorConfig

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.sampling:
            check_sampling(self.config.sampling, "vis_processor sampling")
        self.sampling = self.config.sampling or self.sampling

    def __call__(self, source, rng=None):
        """Returns (frames float (C, T, H, W), DecodedClip) for a path, bytes or file object."""
        cfg = self.config
        clip = load_video(source, cfg.n_frms, cfg.image_size, cfg.image_size, self.sampling, cfg.backend, rng)
        frames = self.augment(clip.frames, rng)
        if cfg.per_clip_norm:
            return standardize_clip(frames), clip
        return normalize(frames, cfg.mean, cfg.std, channel_dim=0), clip

    def augment(self, frames, rng):
        return frames


@registry.register_processor("alpro_video_eval")
class AlproVideoEvalProcessor(_VideoProcessor):
    """Uniformly spaced frames, no augmentation."""

    sampling = "uniform"


@dataclasses.dataclass
class VideoTrainProcessorConfig(VideoProcessorConfig):
    min_scale: float = 0.5  # random resized crop keeps this share of the frame area at least
    max_scale: float = 1.0


@registry.register_processor("alpro_video_train")
class AlproVideoTrainProcessor(_VideoProcessor):
    """Head-tail frame sampling and one random resized crop shared by all frames of the clip.

    No horizontal flip: it would turn left-to-right motion into right-to-left, which can change
    the answer (an action's direction is often what tells two classes apart).
    """

    sampling = "headtail"
    Config = VideoTrainProcessorConfig

    def augment(self, frames, rng):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        rng = rng or random.Random()
        _, _, height, width = frames.shape
        top, left, h, w = random_crop_box(height, width, (self.config.min_scale, self.config.max_scale), rng)
        frames = frames.permute(1, 0, 2, 3)  # (T, C, H, W) for torchvision
        size = [self.config.image_size, self.config.image_size]
        frames = TF.resized_crop(frames, top, left, h, w, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        return frames.permute(1, 0, 2, 3)


def random_crop_box(height, width, scale, rng, ratio=(3 / 4, 4 / 3), tries=10):
    """(top, left, h, w) of a crop covering ``scale`` of the area with aspect ratio in ``ratio``,
    drawn from ``rng`` (a ``random.Random``) so that augmentation is reproducible per sample."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(tries):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    side = min(height, width)  # fall back to a centre square
    return (height - side) // 2, (width - side) // 2, side, side
