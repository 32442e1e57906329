"""The audio-language branch of Video-LLaMA, under the original's names, so that its published
checkpoints (``AL_LLaMA_2_7B_*.pth``) load by the same rename as the vision branch's:

    sound: 2-second clips' filterbanks (B, clips ≤ 8, 1, 128, 204) → ImageBind's audio tower
    or frames (B, C, T ≤ 8, H, W), each through ImageBind's vision tower (training without sound)
      → ImageBind embeddings                            (B, clips, 1024)
      → + audio_position_embedding                      (8, 1024)
      → audio Q-Former over audio_query_tokens          2 layers, width 768, 8 queries, cross-attending to 1024
      → audio_llama_proj                                (B, 8, D_llm): tokens for the LLM, before the video's

Which branch the frames feed follows the two freeze flags: as in the original, the audio branch when
it trains and the video Q-Former is frozen (its ``audiobranch_*`` configs), else the video branch;
when both train, both (audio tokens first: the original trained no such model, and this is the order
its demo asks in). A model is asked as it trained: one whose audio branch trained alone answers
about silent frames through it too. With sound (chat, inference, mode selection, evaluation) the
soundtrack feeds the audio branch and the frames the video branch, as the original demo asks.
"""

import logging
from pathlib import Path

import torch
import torch.nn as nn

from video_llama.common.errors import CheckpointError
from video_llama.models.checkpoint import RANDOM, load_weights
from video_llama.models.encoders import build_qformer
from video_llama.models.imagebind import AUDIO, VISION, ImageBindTowers

logger = logging.getLogger(__name__)

IMAGEBIND_FILE = "imagebind_huge.pth"  # what the original's imagebind_ckpt_path folder holds
MAX_AUDIO_CLIPS = 8  # audio_position_embedding's rows: 2-second clips, or frames in training
AUDIO_QFORMER_LAYERS = 2
AUDIO_PARTS = ("audio_Qformer", "audio_query_tokens", "audio_position_embedding", "audio_llama_proj")


def frame_branches(cfg):
    """The branches whose tokens the frames give the LLM, in prompt order (see the module doc)."""
    if not cfg.get("equip_audio_branch"):
        return ("video",)
    audio_trains, video_trains = not cfg.frozen_audio_Qformer, not cfg.frozen_video_Qformer
    if audio_trains:
        return ("audio", "video") if video_trains else ("audio",)
    return ("video",)


def visual_token_count(cfg):
    """The placeholders a prompt about frames holds: the tokens of :func:`frame_branches`."""
    counts = {"audio": cfg.get("num_audio_query_token"), "video": cfg.num_video_query_token}
    return sum(counts[branch] for branch in frame_branches(cfg))


class AudioLanguageBranch:
    """What ``VideoLLAMA`` adds with ``model.equip_audio_branch``: the frozen ImageBind towers
    (``audio_encoder``, the original's name) and the trainable parts, held by the model itself so
    that its parameter names are the published checkpoints'."""

    def build_audio_branch(self, cfg, llm_width, dtype):
        """``dtype``: the towers' (the ViT's: fp16 for ``vit_precision: fp16`` on a GPU)."""
        self.audio_encoder = ImageBindTowers(cfg.imagebind).to(dtype)  # ImageBind's shapes, whatever the frames' size
        embed_dim = cfg.imagebind.embed_dim
        self.audio_Qformer = build_qformer(cfg, num_layers=AUDIO_QFORMER_LAYERS, encoder_width=embed_dim,
                                           cross_attention_freq=1)
        width, std = cfg.qformer_hidden_size, self.audio_Qformer.config.initializer_range
        self.audio_query_tokens = nn.Parameter(torch.zeros(1, cfg.num_audio_query_token, width).normal_(std=std))
        self.audio_position_embedding = nn.Embedding(MAX_AUDIO_CLIPS, embed_dim)
        self.audio_llama_proj = nn.Linear(width, llm_width)

    def audio_branch_names(self):
        """The names of the trainable part's parameters (what ``ckpt_2`` holds)."""
        return {n for n, _ in self.named_parameters() if n.split(".")[0] in AUDIO_PARTS}

    def load_imagebind(self, sources):
        """``imagebind_ckpt_path`` (the original's folder, the file, or its URL) into the towers
        (before ``ckpt``); ``sources`` records it."""
        from video_llama.common.hub import resolve_weights_file

        path = self.cfg.imagebind_ckpt_path
        if path == RANDOM:
            return
        path = Path(path) / IMAGEBIND_FILE if Path(path).is_dir() else resolve_weights_file(path, "model.imagebind_ckpt_path")
        report = load_weights(self, path, "model.imagebind_ckpt_path", required_prefixes=("audio_encoder.",),
                              add_prefix="audio_encoder.", component=True)
        sources.update(dict.fromkeys(report.loaded, "model.imagebind_ckpt_path"))

    def load_audio_branch(self, sources, random_on_purpose=False):
        """``ckpt_2`` into the trainable part, after ``ckpt`` and over what it gave, as the original
        loads them; a frozen branch that no file filled is refused unless kept
        ``random_on_purpose`` (``model.ckpt: random``)."""
        cfg, names = self.cfg, self.audio_branch_names()
        if cfg.get("ckpt_2"):
            replaced = [n for n in names if sources.get(n) == "model.ckpt"]
            if replaced:  # a run of ours as ckpt: it held an audio branch (a rebuilt run never names ckpt_2)
                logger.warning("model.ckpt_2 (%s) replaces the audio branch model.ckpt (%s) holds", cfg.ckpt_2, cfg.ckpt)
            report = load_weights(self, cfg.ckpt_2, "model.ckpt_2", required_prefixes=AUDIO_PARTS, only=AUDIO_PARTS)
            sources.update(dict.fromkeys(report.loaded, "model.ckpt_2"))
        unfilled = sorted(names - set(sources))
        if unfilled and cfg.frozen_audio_Qformer and not random_on_purpose:
            raise CheckpointError(f"model.frozen_audio_Qformer is True but no file filled the audio branch ({unfilled[0]}, "
                                  f"...): set model.ckpt_2 to its checkpoint (e.g. AL_LLaMA_2_7B_Finetuned.pth), train it "
                                  "(model.frozen_audio_Qformer=False), or model.ckpt=random to keep it random on purpose")

    def imagebind_embeddings(self, sound=None, frames=None):
        """(B, clips, embed_dim) from the soundtrack's filterbanks (B, clips, 1, mel, time), or from
        frames (B, C, T, H, W), each frame an image through the vision tower."""
        dtype = next(self.audio_encoder.parameters()).dtype
        if sound is not None:
            return self.audio_encoder(sound.to(dtype), AUDIO).float()
        return self.audio_encoder(frames.transpose(1, 2).to(dtype), VISION).float()

    def encode_audio(self, sound=None, frames=None):
        """The audio branch's LLM tokens (B, num_audio_query_token, D_llm) of a soundtrack, or of
        frames (training without sound)."""
        embeddings = self.imagebind_embeddings(sound, frames)
        batch, clips = embeddings.shape[:2]
        if clips > MAX_AUDIO_CLIPS:
            what = "audio clips" if sound is not None else "frames (datasets.*.vis_processor.*.n_frms)"
            raise ValueError(f"{clips} {what} exceed the audio branch's {MAX_AUDIO_CLIPS} positions")
        positions = torch.arange(clips, device=embeddings.device)
        hidden = embeddings + self.audio_position_embedding(positions)[None]
        attention = torch.ones(hidden.shape[:-1], dtype=torch.long, device=hidden.device)
        queries = self.audio_query_tokens.expand(batch, -1, -1)
        out = self.audio_Qformer(query_embeds=queries, encoder_hidden_states=hidden,
                                 encoder_attention_mask=attention).last_hidden_state
        return self.audio_llama_proj(out)
