"""ImageBind's vision and audio towers, the frozen encoder of the audio-language branch.

ImageBind embeds images and sounds in one 1024-wide space, which is why the branch trains without
audio: the frames go through the vision tower in training, the soundtrack through the audio tower in
chat, into the same audio Q-Former. Only these two of ImageBind's six towers are built; the names
are those of ``imagebind_huge.pth`` (``modality_preprocessors.audio.cls_token``, ...), whose other
towers' weights are reported unused when it loads.

    vision: image (N, 3, H, W) → repeated to 2 frames → Conv3d (2, 14, 14) patches + cls + positions
            → LayerNorm → blocks → LayerNorm, cls → Linear → L2-normalised      (N, 1024)
    audio:  filterbank (N, 1, 128, 204) → Conv2d 16, stride 10 → LayerNorm, + cls + positions
            → blocks (attention with learnt key/value biases) → LayerNorm, cls → Linear
            → L2-normalised × logit scale 20                                      (N, 1024)

The audio embedding keeps the ×20 of ImageBind's audio postprocessor and the vision one does not,
as the original's ``get_audio_feature`` gives them: the published audio branch was trained on unit
vision embeddings and answers on sounds at that scale.

Made of PyTorch's ``nn.MultiheadAttention`` (ImageBind's attention, with its parameter names) and
timm's ``Mlp``/``DropPath``; ImageBind's own package is not on the registry (``imagebind`` there is
an empty placeholder), and its code and weights are CC-BY-NC.
"""

import math

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp

VISION, AUDIO = "vision", "audio"
VISION_FRAMES = 2  # ImageBind's vision stem sees an image as a 2-frame clip (the image repeated)
AUDIO_KERNEL, AUDIO_STRIDE = 16, 10
# the audio tower's input: 128 mel bins × 204 frames of a 2-second clip (processors/audio.py makes them)
MEL_BINS, MEL_FRAMES = 128, 204
VISION_IMG_SIZE = 224  # the vision tower's positions are learnt for 224² images; other sizes resize them
AUDIO_LOGIT_SCALE = 20.0


class Block(nn.Module):
    """Pre-norm transformer block on (L, N, D) tokens, named as ImageBind's ``BlockWithMasking``."""

    def __init__(self, width, heads, drop_path, bias_kv):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=bias_kv)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm_1 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, 4 * width)
        self.norm_2 = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x):
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class Trunk(nn.Module):
    """ImageBind's ``SimpleTransformer``: an optional LayerNorm first, then the blocks (drop path
    rising linearly to ``drop_path``)."""

    def __init__(self, width, layers, heads, drop_path=0.0, pre_norm=False, bias_kv=False):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(width, eps=1e-6) if pre_norm else nn.Identity())
        rates = [drop_path * i / max(layers - 1, 1) for i in range(layers)]
        self.blocks = nn.Sequential(*[Block(width, heads, rate, bias_kv) for rate in rates])

    def forward(self, tokens):  # (N, L, D) → (N, L, D); the blocks run on (L, N, D) as ImageBind's
        x = self.pre_transformer_layer(tokens).transpose(0, 1)
        return self.blocks(x).transpose(0, 1)


class PatchStem(nn.Module):
    """``rgbt_stem``: patches by a convolution (``proj``), flattened, optionally normalised."""

    def __init__(self, proj, norm_layer=None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class RepeatFrames(nn.Module):
    """An image (N, C, H, W) as a clip of ``times`` identical frames (N, C, times, H, W)."""

    def __init__(self, times):
        super().__init__()
        self.times = times

    def forward(self, x):
        return x.unsqueeze(2).expand(-1, -1, self.times, -1, -1)


class Tokenizer(nn.Module):
    """Patches, a cls token first, learnt positions added: ImageBind's preprocessors."""

    def __init__(self, stem, num_patches, width):
        super().__init__()
        self.rgbt_stem = stem
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * width ** -0.5)
        self.pos_embedding_helper = nn.Module()
        self.pos_embedding_helper.pos_embed = nn.Parameter(torch.randn(1, 1 + num_patches, width) * width ** -0.5)

    def forward(self, x):
        tokens = self.rgbt_stem(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.positions(tokens.shape[1] - 1)

    def positions(self, patches):
        """The position embedding for ``patches`` patches: the learnt one, or, for frames of
        another size, its square grid resized bicubically (as ImageBind adapts it)."""
        learnt = self.pos_embedding_helper.pos_embed
        if learnt.shape[1] == patches + 1:
            return learnt
        side, new = math.isqrt(learnt.shape[1] - 1), math.isqrt(patches)
        grid = learnt[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
        grid = nn.functional.interpolate(grid, size=(new, new), mode="bicubic").permute(0, 2, 3, 1)
        return torch.cat([learnt[:, :1], grid.reshape(1, new * new, -1).to(learnt.dtype)], dim=1)


class Head(nn.Sequential):
    """LayerNorm, the cls token, a projection to the joint space: ``modality_heads.*.{0,2}``."""

    def __init__(self, width, embed_dim):
        super().__init__(nn.LayerNorm(width, eps=1e-6), SelectFirst(), nn.Linear(width, embed_dim, bias=False))


class SelectFirst(nn.Module):
    def forward(self, x):
        return x[:, 0]


class Normalize(nn.Module):
    def forward(self, x):
        return nn.functional.normalize(x, dim=-1)


class LogitScale(nn.Module):
    """ImageBind's fixed ``LearnableLogitScaling`` (its ``log_logit_scale`` buffer is in the file)."""

    def __init__(self, scale):
        super().__init__()
        self.register_buffer("log_logit_scale", torch.full((), math.log(scale)))

    def forward(self, x):
        return self.log_logit_scale.exp().clamp(max=100) * x


class ImageBindTowers(nn.Module):
    """The vision and audio towers of ImageBind, sized by the ``model.imagebind`` keys."""

    def __init__(self, cfg, mel_bins=MEL_BINS, mel_frames=MEL_FRAMES):
        super().__init__()
        patch_size = cfg.vision_patch
        vision_stem = PatchStem(nn.Sequential(
            RepeatFrames(VISION_FRAMES),
            nn.Conv3d(3, cfg.vision_width, kernel_size=(VISION_FRAMES, patch_size, patch_size),
                      stride=(VISION_FRAMES, patch_size, patch_size), bias=False)))
        audio_stem = PatchStem(nn.Conv2d(1, cfg.audio_width, kernel_size=AUDIO_KERNEL, stride=AUDIO_STRIDE, bias=False),
                               norm_layer=nn.LayerNorm(cfg.audio_width))
        audio_patches = ((mel_bins - AUDIO_KERNEL) // AUDIO_STRIDE + 1) * ((mel_frames - AUDIO_KERNEL) // AUDIO_STRIDE + 1)
        self.modality_preprocessors = nn.ModuleDict({
            VISION: Tokenizer(vision_stem, (VISION_IMG_SIZE // patch_size) ** 2, cfg.vision_width),
            AUDIO: Tokenizer(audio_stem, audio_patches, cfg.audio_width),
        })
        self.modality_trunks = nn.ModuleDict({
            VISION: Trunk(cfg.vision_width, cfg.vision_layers, cfg.vision_heads, pre_norm=True),
            AUDIO: Trunk(cfg.audio_width, cfg.audio_layers, cfg.audio_heads, drop_path=cfg.audio_drop_path,
                         bias_kv=True),
        })
        self.modality_heads = nn.ModuleDict({
            VISION: Head(cfg.vision_width, cfg.embed_dim),
            AUDIO: Head(cfg.audio_width, cfg.embed_dim),
        })
        self.modality_postprocessors = nn.ModuleDict({
            VISION: Normalize(),
            AUDIO: nn.Sequential(Normalize(), LogitScale(AUDIO_LOGIT_SCALE)),
        })

    def forward(self, inputs, modality):
        """(B, S, ...) clips or frames of one ``modality`` → (B, S, embed_dim), one embedding each."""
        batch, count = inputs.shape[:2]
        x = inputs.reshape(batch * count, *inputs.shape[2:])
        x = self.modality_preprocessors[modality](x)
        x = self.modality_heads[modality](self.modality_trunks[modality](x))
        return self.modality_postprocessors[modality](x).reshape(batch, count, -1)
