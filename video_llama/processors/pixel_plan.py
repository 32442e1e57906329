"""The per-pixel work a video processor does after decoding (random resized crop, normalisation),
written down as a small plan so that it can run later, on the training device.

Why: on a GPU run the data-loader workers are what limits throughput. A worker that decodes and
then crops, converts to float and normalises spends about as long on the last three as on
decoding a small re-encoded clip, and hands over float frames four times the size of the uint8
ones. With ``run.pixels_on_device`` the worker decodes and draws its random choices (the crop box),
the batch travels as uint8 with one :class:`PixelPlan` per sample, and :func:`finish_pixels` does
the rest where the model is. On the CPU the result is bit-identical to finishing in the worker.
"""

import dataclasses

import torch

from video_llama.processors.normalization import normalize, standardize_clip


@dataclasses.dataclass(frozen=True)
class PixelPlan:
    """What is left to do to one clip's uint8 frames (C, T, H, W)."""

    size: int  # output side in pixels (the crop is resized to size × size)
    mean: tuple  # per-channel mean and std of the [0, 1] pixels
    std: tuple
    per_clip_norm: bool = False  # standardise the clip by its own statistics instead of mean/std
    crop: tuple = None  # (top, left, height, width) of a random resized crop; None: no crop
    still_suppression: float = 0.0  # share of the clip's still image taken from every frame (see below)
    motion_channels: bool = False  # frames become (grey, change since the previous frame, change to the next)

    def crop_resize(self, frames):
        """uint8 (C, T, H, W) → the crop resized to ``size`` × ``size`` (bicubic, antialiased), uint8."""
        if self.crop is None:
            return frames
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        top, left, h, w = self.crop
        frames = frames.permute(1, 0, 2, 3)  # (T, C, H, W) for torchvision
        on_cpu = frames.device.type == "cpu"  # antialiased bicubic of uint8 exists on the CPU only
        frames = TF.resized_crop(frames if on_cpu else frames.float(), top, left, h, w, [self.size, self.size],
                                 interpolation=InterpolationMode.BICUBIC, antialias=True)
        if not on_cpu:  # the CPU kernel rounds and saturates to uint8: do the same
            frames = frames.round_().clamp_(0, 255).to(torch.uint8)
        return frames.permute(1, 0, 2, 3)

    def normalize(self, frames):
        """uint8 frames → float model input."""
        if self.still_suppression:
            frames = suppress_stills(frames, self.still_suppression)
        if self.motion_channels:
            frames = motion_image(frames)
        if self.per_clip_norm:
            return standardize_clip(frames)
        return normalize(frames, self.mean, self.std, channel_dim=0)

    def apply(self, frames):
        return self.normalize(self.crop_resize(frames))


def suppress_stills(frames, share):
    """(C, T, H, W) frames less ``share`` of their still image, in [0, 1] units: per pixel, the
    median over the frames, which is the background wherever a moving object passes for less than
    half of them.

    Why: a model trained from scratch on few clips learns each clip's background, which tells the
    training clips apart perfectly, before it learns the motion that tells the classes apart (on
    textured scenes it never did: docs/streams.md). A fixed camera's background is what does not
    change over a window; taking it away leaves what moves. The median rather than the mean: the
    mean keeps a faint trail of every place the object visited in every frame, so a window over a
    change kept showing the old motion (changes were followed later). ``share`` 1 removes the scene
    entirely (classes told apart by where the motion happens, a glass pane say, then look alike);
    less keeps that much of it for the model to see."""
    pixels = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    return pixels - share * pixels.median(dim=1, keepdim=True).values


def motion_image(frames):
    """(C, T, H, W) frames → (3, T, H, W): per frame its grey image, its change since the previous
    frame and its change to the next (zero at the clip's ends), in [0, 1] units.

    Why: an encoder that looks at one frame at a time (the ViT of every Video-LLaMA) sees where the
    hand is, never which way it goes; the video Q-Former must then compare positions across frame
    tokens, which a model trained from scratch learnt late and not at all over a change of action
    (two motions in one window looked like circling: docs/streams.md). The changes put the direction
    in each frame: bright where something arrived, dark where it left. The grey image keeps the
    scene (a glass pane) for classes told apart by where the motion happens; colour is given up."""
    pixels = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    grey = pixels.mean(dim=0)
    step = grey[1:] - grey[:-1]
    zero = torch.zeros_like(grey[:1])
    return torch.stack([grey, torch.cat([zero, step]), torch.cat([step, zero])])


def finish_pixels(images, plans):
    """A batch of uint8 clips (B, C, T, H, W) and their plans → the float batch, on ``images``' device.
    Each clip is made contiguous first, as the worker's ``transform`` does: batches arrive in the
    decoder's (T, H, W, C) order, and per-clip normalisation sums in memory order."""
    return torch.stack([plan.apply(clip.contiguous()) for clip, plan in zip(images, plans)])


def batch_to_device(batch, device):
    """Move a collated batch's tensors to ``device``; uint8 clips with plans are finished there.

    A batch whose samples carry ``pixel_plan`` (``run.pixels_on_device``) travels as uint8: a
    quarter of the bytes of float frames across processes and to the GPU.
    """
    moved = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    plans = moved.pop("pixel_plan", None)
    if plans is not None and "image" in moved:
        moved["image"] = finish_pixels(moved["image"], plans)
    return moved
