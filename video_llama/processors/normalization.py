"""Pixel normalisation shared by the image and video processors."""

import torch

# What the pretrained EVA-CLIP / BLIP-2 encoders expect.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize(pixels, mean, std, channel_dim=0):
    """uint8 or [0, 1] float pixels → (x - mean) / std along ``channel_dim``."""
    shape = [1] * pixels.dim()
    shape[channel_dim] = -1
    scale = 255.0 if pixels.dtype == torch.uint8 else 1.0
    mean = torch.tensor(tuple(mean)).view(shape) * scale  # tuple(): an OmegaConf list costs ~1 ms to inspect
    std = torch.tensor(tuple(std)).view(shape) * scale
    if pixels.dtype == torch.uint8:  # a fresh float tensor, normalised in place (the hot path of a loader)
        return pixels.float().sub_(mean).div_(std)
    return (pixels - mean.to(pixels.dtype)) / std.to(pixels.dtype)


def standardize_clip(pixels, channel_dim=0, eps=1e-2):
    """Zero mean, unit variance per colour channel over the whole clip: for encoders trained from
    scratch, where a fixed mean/std leaves each scene's colour cast, which swamps the motion signal.
    ``eps`` (in [0, 1] pixel units) keeps a flat channel from blowing up its noise."""
    pixels = pixels.float()
    if pixels.max() > 1.0:
        pixels = pixels / 255.0
    dims = [d for d in range(pixels.dim()) if d != channel_dim]
    mean = pixels.mean(dim=dims, keepdim=True)
    std = pixels.std(dim=dims, keepdim=True)
    return (pixels - mean) / (std + eps)
