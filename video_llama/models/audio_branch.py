"""The audio-language branch's own part, under the original's names, so that its published
checkpoints (``AL_LLaMA_2_7B_*.pth``) load by the same rename as the vision branch's:

    ImageBind embeddings (B, clips ≤ 8, 1024): one per 2-second clip of sound, or per frame
    through ImageBind's vision tower when the branch trains on video without sound
      → + audio_position_embedding                      (8, 1024)
      → audio Q-Former over audio_query_tokens          2 layers, width 768, 8 queries, cross-attending to 1024
      → audio_llama_proj                                (B, 8, D_llm): tokens for the LLM, before the video's

Not yet part of ``VideoLLAMA`` (``model.equip_audio_branch`` is still refused): the ImageBind towers
that make the embeddings are not in this version yet.
"""

import torch
import torch.nn as nn

from video_llama.models.encoders import build_qformer

IMAGEBIND_WIDTH = 1024  # ImageBind-huge's joint embedding
AUDIO_QUERY_TOKENS = 8
AUDIO_QFORMER_LAYERS = 2
MAX_AUDIO_CLIPS = 8


class AudioBranch(nn.Module):
    """The trainable part of the audio-language branch; its parameters' names are the original's
    top-level ones (``audio_Qformer``, ``audio_query_tokens``, ``audio_position_embedding``,
    ``audio_llama_proj``), so a model holding its children directly has the checkpoint's layout."""

    def __init__(self, cfg, llm_width, num_query_token=AUDIO_QUERY_TOKENS, max_clips=MAX_AUDIO_CLIPS,
                 embed_width=IMAGEBIND_WIDTH):
        super().__init__()
        self.audio_Qformer = build_qformer(cfg, num_layers=AUDIO_QFORMER_LAYERS, encoder_width=embed_width,
                                           cross_attention_freq=1)
        width = cfg.qformer_hidden_size
        std = self.audio_Qformer.config.initializer_range
        self.audio_query_tokens = nn.Parameter(torch.zeros(1, num_query_token, width).normal_(std=std))
        self.audio_position_embedding = nn.Embedding(max_clips, embed_width)
        self.audio_llama_proj = nn.Linear(width, llm_width)

    def forward(self, embeddings):
        """(B, clips, embed_width) ImageBind embeddings → (B, num_query_token, llm_width) LLM tokens."""
        batch, clips = embeddings.shape[:2]
        if clips > self.audio_position_embedding.num_embeddings:
            raise ValueError(f"{clips} audio clips exceed the {self.audio_position_embedding.num_embeddings} "
                             "audio positions")
        positions = torch.arange(clips, device=embeddings.device)
        hidden = embeddings + self.audio_position_embedding(positions)[None]
        attention = torch.ones(hidden.shape[:-1], dtype=torch.long, device=embeddings.device)
        queries = self.audio_query_tokens.expand(batch, -1, -1)
        out = self.audio_Qformer(query_embeds=queries, encoder_hidden_states=hidden,
                                 encoder_attention_mask=attention).last_hidden_state
        return self.audio_llama_proj(out)
