"""BLIP-2 image processors: PIL image → float (C, H, W). (torchvision is imported on use: it is slow.)"""

import dataclasses

from video_llama.common.registry import registry
from video_llama.processors.base_processor import BaseProcessor
from video_llama.processors.normalization import CLIP_MEAN, CLIP_STD
from video_llama.processors.video_decoding import VideoDecodeError


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}  # the files load_image reads


def load_image(source):
    """An RGB PIL image from a path or bytes; VideoDecodeError (naming a path) when it is not one."""
    import io

    from PIL import Image, UnidentifiedImageError

    name = f"image {source}" if not isinstance(source, (bytes, bytearray)) else "image"
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as image:
            return image.convert("RGB")
    except FileNotFoundError as err:
        raise VideoDecodeError(f"{name}: file not found") from err
    except UnidentifiedImageError as err:
        raise VideoDecodeError(f"cannot decode {name}: not an image file PIL can read") from err
    except OSError as err:  # truncated
        raise VideoDecodeError(f"cannot decode {name}: {err}") from err


@dataclasses.dataclass
class ImageProcessorConfig:
    image_size: int = 224
    mean: list = dataclasses.field(default_factory=lambda: list(CLIP_MEAN))
    std: list = dataclasses.field(default_factory=lambda: list(CLIP_STD))


@dataclasses.dataclass
class ImageTrainProcessorConfig(ImageProcessorConfig):
    min_scale: float = 0.5
    max_scale: float = 1.0
    horizontal_flip: bool = False  # the original's image training has none; a flip swaps left and right


def _to_normalized_tensor(mean, std):
    import torch
    from torchvision.transforms import v2 as T

    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]


@registry.register_processor("blip2_image_train")
class Blip2ImageTrainProcessor(BaseProcessor):
    Config = ImageTrainProcessorConfig

    def __init__(self, config=None):
        super().__init__(config)
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import v2 as T

        cfg = self.config
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(cfg.image_size, scale=(cfg.min_scale, cfg.max_scale), interpolation=InterpolationMode.BICUBIC),
                *([T.RandomHorizontalFlip()] if cfg.horizontal_flip else []),
                *_to_normalized_tensor(cfg.mean, cfg.std),
            ]
        )

    def __call__(self, image):
        return self.transform(image.convert("RGB"))


@registry.register_processor("blip2_image_eval")
class Blip2ImageEvalProcessor(BaseProcessor):
    Config = ImageProcessorConfig

    def __init__(self, config=None):
        super().__init__(config)
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import v2 as T

        cfg = self.config
        size = (cfg.image_size, cfg.image_size)
        self.transform = T.Compose([T.Resize(size, interpolation=InterpolationMode.BICUBIC), *_to_normalized_tensor(cfg.mean, cfg.std)])

    def __call__(self, image):
        return self.transform(image.convert("RGB"))
