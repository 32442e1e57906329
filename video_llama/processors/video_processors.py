"""Video processors: sample and decode frames, augment (train), normalise → float (C, T, H, W)."""

import dataclasses
import math
import random
from pathlib import Path

from video_llama.common.registry import registry
from video_llama.processors.base_processor import BaseProcessor
from video_llama.processors.normalization import CLIP_MEAN, CLIP_STD
from video_llama.processors.pixel_plan import PixelPlan
from video_llama.processors.video_decoding import (
    BACKENDS,
    WindowSampling,
    check_sampling,
    load_video,
    probe_video,
    sample_indices,
)


@dataclasses.dataclass
class VideoProcessorConfig:
    n_frms: int = 8  # frames sampled per clip
    image_size: int = 224  # frames are resized (in the decoder) to image_size × image_size
    mean: list = dataclasses.field(default_factory=lambda: list(CLIP_MEAN))
    std: list = dataclasses.field(default_factory=lambda: list(CLIP_STD))
    per_clip_norm: bool = False  # standardise each clip instead of mean/std (from-scratch encoders)
    # 0..1: take this share of the clip's still image (per-pixel median) from every frame, so that a
    # fixed camera's background fades and what moves stands out (from-scratch encoders that memorise
    # backgrounds; pixel_plan.py)
    still_suppression: float = 0.0
    # the three channels become each frame's grey image, its change since the previous sampled frame
    # and its change to the next, so a per-frame encoder sees which way things move (encoders that
    # train: a frozen pretrained one never saw such frames; pixel_plan.py)
    motion_channels: bool = False
    backend: str = "decord"  # decord | pyav
    sampling: str = ""  # uniform | headtail; empty = the processor's own (eval: uniform, train: headtail)
    # > 0: n_frms frames of a window of this many seconds, cut as `select-mode` cuts a stream (train: the
    # window ends at a random point of the clip; eval: it is centred); 0: the whole clip, per `sampling`
    window_s: float = 0.0

    def __post_init__(self):  # checked when the experiment config is validated, before any decoding
        if not isinstance(self.window_s, (int, float)) or self.window_s < 0:
            raise ValueError(f"window_s must be seconds >= 0 (0: the whole clip), got {self.window_s!r}")
        if not isinstance(self.n_frms, int) or self.n_frms < 1:
            raise ValueError(f"n_frms must be a positive number of frames, got {self.n_frms!r}")
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {self.image_size!r}")
        if not isinstance(self.still_suppression, (int, float)) or not 0 <= self.still_suppression <= 1:
            raise ValueError(f"still_suppression must be a share in [0, 1], got {self.still_suppression!r}")
        if not isinstance(self.motion_channels, bool):
            raise ValueError(f"motion_channels must be True or False, got {self.motion_channels!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {self.backend!r}")
        if self.sampling:
            check_sampling(self.sampling, "sampling")


@dataclasses.dataclass
class ClipInfo:
    """What a dataset needs to know of a processed clip, besides its frames."""

    num_frames: int  # frames in the source clip
    fps: float  # the source's average frame rate (0.0 when unknown)
    indices: list = None  # the sampled frame indices; None when the processor does not say
    window: bool = False  # the frames are a window cut from the clip (window_s)

    @property
    def shown_indices(self):
        """The sampled frames as the timestamp sentence names them: counted from a window's start
        (as select-mode counts a stream's), else from the clip's."""
        return [i - self.indices[0] for i in self.indices] if self.window else self.indices

    @property
    def is_short(self):
        return self.indices is not None and self.num_frames < len(self.indices)


class BaseVideoProcessor(BaseProcessor):
    """The LAVIS contract: ``processor(path_or_bytes) -> float frames (C, T, H, W)``.

    A subclass may override ``__call__`` alone, as LAVIS processors do; the dataset asks
    :meth:`clip_info` for the clip's frame count, frame rate and sampled indices. Randomness
    (headtail frames, crops) comes from the global ``random`` module, which the training data
    path seeds per sample, so any processor is reproducible whichever worker runs it.

    :meth:`prepare` is the same work split in two: decoding and the random draws now, the pixel
    work as a :class:`~video_llama.processors.pixel_plan.PixelPlan` for the training device
    (``run.pixels_on_device``).
    """

    # what the model was trained to see: an evaluation of a trained run takes them from the run's
    # evaluation processor (the config loader asks for them), so an evaluation YAML cannot differ
    MODEL_BOUND_KEYS = ("per_clip_norm", "still_suppression", "motion_channels", "mean", "std")

    sampling = "uniform"
    window_place = "middle"  # where a window (window_s) is cut from a clip: random | middle
    Config = VideoProcessorConfig

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.sampling:
            check_sampling(self.config.sampling, "vis_processor sampling")
        self.sampling = self.config.sampling or self.sampling
        self._last = (None, None)  # (source, ClipInfo) of the last clip this processor decoded

    def __call__(self, source):
        return self.transform(self.load(source).frames)

    def load(self, source, sampling=None, rng=None):
        """Decode the configured frames of ``source`` (uint8 DecodedClip); remembered for clip_info.
        ``sampling`` replaces :meth:`frame_sampling` (a dataset cutting windows its own way); ``rng``
        draws its random choices (None: the ``random`` module)."""
        cfg = self.config
        sampling = sampling or self.frame_sampling()
        clip = load_video(source, cfg.n_frms, cfg.image_size, cfg.image_size, sampling, cfg.backend, rng)
        self._last = (source, ClipInfo(clip.num_frames, clip.fps, clip.indices, window=callable(sampling)))
        return clip

    def frame_sampling(self, place=None):
        """How this processor picks a clip's frames: its sampling name, or with ``window_s`` a
        :class:`WindowSampling` cut at ``place`` (default: the processor's own)."""
        if self.config.window_s:
            return WindowSampling(float(self.config.window_s), self.config.n_frms, place or self.window_place)
        return self.sampling

    def finish(self, frames, defer=False):
        """uint8 frames (C, T, H, W) → (augmented, normalised float frames, None), or with ``defer``
        and a processor whose work a plan describes, (the uint8 frames, their PixelPlan)."""
        if defer and self._plan_describes_transform():
            return frames, self.plan(self.draw_crop(frames))
        return self.transform(frames), None

    def transform(self, frames):
        """uint8 frames (C, T, H, W) → augmented, normalised float frames."""
        # decoders hand over a (C, T, H, W) view of their (T, H, W, C) array; per-pixel work runs
        # faster on a contiguous copy (the deferred path copies on the device: finish_pixels)
        return self.plan(None).normalize(self.augment(frames.contiguous()))

    def augment(self, frames):
        """uint8 frames → the processor's augmentation of them (a crop when ``draw_crop`` draws one)."""
        return self.plan(self.draw_crop(frames)).crop_resize(frames)

    def plan(self, crop):
        """The :class:`PixelPlan` of this processor's settings with the given crop box."""
        cfg = self.config
        return PixelPlan(cfg.image_size, tuple(cfg.mean), tuple(cfg.std), cfg.per_clip_norm, crop,
                         float(cfg.still_suppression), bool(cfg.motion_channels))

    def prepare(self, source):
        """(uint8 frames, PixelPlan) of ``source`` with the plan's random choices drawn now, so the
        pixel work can be done later on the training device; (float frames, None) for a class whose
        own ``__call__``, ``transform`` or ``augment`` the plan cannot describe (it runs here)."""
        if not self._plan_describes_transform():
            return self(source), None
        return self.finish(self.load(source).frames, defer=True)

    def draw_crop(self, frames):
        """The crop box of this clip (None: none); draws from ``random``."""
        return None

    @classmethod
    def _plan_describes_transform(cls):
        return (cls.__call__ is BaseVideoProcessor.__call__ and cls.transform is BaseVideoProcessor.transform
                and cls.augment is BaseVideoProcessor.augment)

    def clip_info(self, source):
        """Frame count, fps and sampled indices of ``source``: those of the decode just done, else
        (a subclass that decodes in its own ``__call__``) read from the container, with the indices
        only where the sampling is deterministic."""
        last_source, info = self._last
        if info is not None and (last_source is source or (isinstance(source, (str, Path)) and str(last_source) == str(source))):
            return info
        num_frames, fps = probe_video(source, self.config.backend)
        uniform = self.sampling == "uniform" and not self.config.window_s
        indices = sample_indices(num_frames, self.config.n_frms, "uniform") if uniform else None
        return ClipInfo(num_frames, fps, indices)


@registry.register_processor("alpro_video_eval")
class AlproVideoEvalProcessor(BaseVideoProcessor):
    """Uniformly spaced frames, no augmentation."""

    sampling = "uniform"


@dataclasses.dataclass
class VideoTrainProcessorConfig(VideoProcessorConfig):
    min_scale: float = 0.5  # random resized crop keeps this share of the frame area at least
    max_scale: float = 1.0


@registry.register_processor("alpro_video_train")
class AlproVideoTrainProcessor(BaseVideoProcessor):
    """Head-tail frame sampling and one random resized crop shared by all frames of the clip.

    No horizontal flip: it would turn left-to-right motion into right-to-left, which can change
    the answer (an action's direction is often what tells two classes apart).
    """

    sampling = "headtail"
    window_place = "random"
    Config = VideoTrainProcessorConfig

    def draw_crop(self, frames):
        _, _, height, width = frames.shape
        return random_crop_box(height, width, (self.config.min_scale, self.config.max_scale), random)


def random_crop_box(height, width, scale, rng, ratio=(3 / 4, 4 / 3), tries=10):
    """(top, left, h, w) of a crop covering ``scale`` of the area with aspect ratio in ``ratio``,
    drawn from ``rng`` (``random`` or a ``random.Random``)."""
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
