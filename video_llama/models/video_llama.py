"""Video-LLaMA, vision-language branch, assembled from maintained parts.

    frames (B, C, T, H, W)
      → EVA ViT (timm) → ln_vision                       per frame: (B·T, 1 + patches, W_vit)
      → image Q-Former (transformers Blip2QFormerModel)   per frame: (B·T, num_query_token, 768)
      → + video_frame_position_embedding, flatten frames  (B, T·num_query_token, 768)
      → video Q-Former over video_query_tokens            (B, num_video_query_token, 768)
      → llama_proj                                        (B, num_video_query_token, D_llm)
      → replaces the <ImageHere> placeholders of the prompt → causal LM → loss on answer tokens

The LLM is frozen (``freeze_llm``, as in the original); the other freezing flags decide the rest. Frozen modules stay in eval mode
even after ``model.train()`` (their dropout and norms must behave as at pretraining).
"""

import logging
import random

import torch
import torch.nn as nn

from video_llama.common.registry import registry
from video_llama.conversation.templates import IGNORE_INDEX, IMAGE_PATCH_TOKEN, conversation_ids, get_template
from video_llama.models.base_model import BaseModel
from video_llama.models.encoders import build_eva_vit, build_qformer

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@registry.register_model("video_llama")
class VideoLLAMA(BaseModel):
    BASE_CONFIG_PATH = "models/video_llama/base.yaml"
    DEFAULT_MODEL_TYPE = "pretrain_llama_v2"
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_llama_v2": "models/video_llama/pretrain_llama_v2.yaml",
        "pretrain_vicuna": "models/video_llama/pretrain_vicuna.yaml",
        "tiny": "models/video_llama/tiny.yaml",
    }

    def __init__(self, cfg, llama_model=None, llama_tokenizer=None):
        """Args:
        cfg: the resolved ``model:`` section (every key of base.yaml).
        llama_model, llama_tokenizer: the causal LM and its tokenizer; both None builds the
            vision-language part only (``cfg.llama_hidden_size`` must then be set), e.g. on meta.
        """
        super().__init__()
        if cfg.equip_audio_branch:
            raise NotImplementedError(
                "model.equip_audio_branch: True needs the ImageBind audio encoder, which this version "
                "does not include; set model.equip_audio_branch=False (the vision branch trains alone)"
            )
        self.cfg = cfg
        self.num_video_query_token = cfg.num_video_query_token

        vit_dtype = DTYPES["fp16"] if cfg.vit_precision == "fp16" and torch.cuda.is_available() else torch.float32
        self.visual_encoder = build_eva_vit(cfg).to(vit_dtype)
        self.ln_vision = nn.LayerNorm(cfg.vit_embed_dim)
        width = cfg.qformer_hidden_size
        self.Qformer = build_qformer(cfg, num_layers=cfg.qformer_num_layers, encoder_width=cfg.vit_embed_dim,
                                     cross_attention_freq=cfg.qformer_cross_attention_freq)
        # Query tokens start at the Q-Former's initializer_range, as in the original (0.02 there).
        query_std = self.Qformer.config.initializer_range
        self.query_tokens = nn.Parameter(torch.zeros(1, cfg.num_query_token, width).normal_(std=query_std))

        self.video_frame_position_embedding = nn.Embedding(cfg.max_frame_pos, width)
        if cfg.frame_pos_embed_std:
            nn.init.normal_(self.video_frame_position_embedding.weight, std=cfg.frame_pos_embed_std)
        self.video_Qformer = build_qformer(cfg, num_layers=cfg.video_qformer_num_layers, encoder_width=width,
                                           cross_attention_freq=1)
        self.video_query_tokens = nn.Parameter(torch.zeros(1, cfg.num_video_query_token, width).normal_(std=query_std))

        self.llama_model, self.llama_tokenizer = llama_model, llama_tokenizer
        llm_width = cfg.llama_hidden_size or llama_model.config.hidden_size
        self.llama_proj = nn.Linear(width, llm_width)
        if llama_tokenizer is not None:
            self.im_patch_token_id = llama_tokenizer.convert_tokens_to_ids(IMAGE_PATCH_TOKEN)
            self.template = get_template("vicuna" if cfg.end_sym == "###" else "llama_v2")
        # Caption prompts are wrapped in model.prompt_template. The guide's single-quoted YAML keeps
        # "\n" as two characters; the template means newlines.
        self.prompt_template = cfg.prompt_template.replace("\\n", "\n").replace("{}", "{q}").rstrip()
        self.prompt_list = load_prompts(cfg.prompt_path)
        self.max_txt_len = cfg.max_txt_len
        self._freeze()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg, load_llm=True):
        llama_model = llama_tokenizer = None
        if load_llm:
            llama_model, llama_tokenizer = load_llm_and_tokenizer(cfg.llama_model, DTYPES[cfg.llama_dtype])
        model = cls(cfg, llama_model, llama_tokenizer)
        model.load_pretrained_parts()
        model.log_parameter_counts()
        return model

    def load_pretrained_parts(self):
        """The files the config names, in order: the EVA ViT, the BLIP-2 image Q-Former (LAVIS
        ``.pth`` or a Hugging Face BLIP-2 folder, which may bring the ViT too), then ``ckpt``
        (the trainable part: a published VL checkpoint or one of ours), then ``ckpt_2``."""
        from video_llama.models.checkpoint import load_weights

        cfg = self.cfg
        if cfg.vit_ckpt:  # LAVIS's eva_vit_g.pth holds the ViT's own names, without our module prefix
            load_weights(self, cfg.vit_ckpt, "model.vit_ckpt", required_prefixes=("visual_encoder.",),
                         add_prefix="visual_encoder.")
        if cfg.q_former_model:
            load_weights(self, cfg.q_former_model, "model.q_former_model",
                         required_prefixes=("Qformer.", "query_tokens"),
                         wanted_prefixes=("vision_model.", "qformer.", "query_tokens"))
        for key in ("ckpt", "ckpt_2"):
            if cfg[key]:
                load_weights(self, cfg[key], f"model.{key}", required_prefixes=None if key == "ckpt" else ())

    @classmethod
    def from_pretrained(cls, path, load_llm=True, **overrides):
        """One call for a model we trained: ``path`` is a run folder (its best checkpoint) or a
        checkpoint folder; the model is rebuilt from the config saved with it, then loaded.
        ``overrides`` replace ``model:`` keys (e.g. ``llama_model=`` when the LLM moved)."""
        from omegaconf import OmegaConf

        from video_llama.common.checkpointing import BEST, CONFIG, resolve_checkpoint

        folder = resolve_checkpoint(path, prefer=BEST, key="from_pretrained")
        cfg = OmegaConf.load(folder / CONFIG).model
        cfg = OmegaConf.merge(cfg, {**overrides, "ckpt": str(folder)})
        return cls.from_config(cfg, load_llm=load_llm)

    def frozen_modules(self):
        """Names of the submodules (and parameters) that the config freezes."""
        cfg = self.cfg
        frozen = ["llama_model"] if cfg.freeze_llm else []
        if cfg.freeze_vit:
            frozen += ["visual_encoder", "ln_vision"]
        if cfg.freeze_qformer:
            frozen += ["Qformer", "query_tokens"]
        if cfg.frozen_video_Qformer:
            frozen += ["video_Qformer", "video_query_tokens", "video_frame_position_embedding"]
        if cfg.frozen_llama_proj:
            frozen += ["llama_proj"]
        return frozen

    def _freeze(self):
        for name in self.frozen_modules():
            part = getattr(self, name)
            if part is None:  # no LLM when built without one (e.g. on meta)
                continue
            part.requires_grad_(False)
            if isinstance(part, nn.Module):
                part.eval()

    def train(self, mode=True):
        super().train(mode)
        for name in self.frozen_modules():
            part = getattr(self, name)
            if isinstance(part, nn.Module):
                part.eval()
        return self

    def log_parameter_counts(self):
        for name, child in self.named_children():
            trainable = sum(p.numel() for p in child.parameters() if p.requires_grad)
            frozen = sum(p.numel() for p in child.parameters() if not p.requires_grad)
            logger.info("%-32s trainable %12s   frozen %14s", name, f"{trainable:,}", f"{frozen:,}")
        for name, param in self.named_parameters(recurse=False):
            logger.info("%-32s trainable %12s   frozen %14s", name,
                        f"{param.numel() if param.requires_grad else 0:,}", f"{0 if param.requires_grad else param.numel():,}")
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        logger.info("trainable parameters in all: %s", f"{total:,}")

    def trainable_state_dict(self):
        """Only what training changes (the frozen ViT, Q-Former and LLM come from their files)."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t for n, t in self.state_dict().items() if n in trainable}

    # ------------------------------------------------------------------ forward
    def encode_frames(self, frames):
        """(B, C, T, H, W) frames → (B, T, num_query_token, D_qformer): each frame on its own
        through the ViT and the image Q-Former."""
        batch, _, num_frames, height, width = frames.shape
        images = frames.permute(0, 2, 1, 3, 4).reshape(batch * num_frames, -1, height, width)
        vit_dtype = next(self.visual_encoder.parameters()).dtype
        image_embeds = self.ln_vision(self.visual_encoder.forward_features(images.to(vit_dtype)).float())
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=images.device)
        query_tokens = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        frame_queries = self.Qformer(query_embeds=query_tokens, encoder_hidden_states=image_embeds,
                                     encoder_attention_mask=image_atts).last_hidden_state
        return frame_queries.reshape(batch, num_frames, -1, frame_queries.shape[-1])

    def encode_video(self, frames):
        """(B, C, T, H, W) frames → (B, num_video_query_token, D_llm) soft tokens."""
        batch, num_frames = frames.shape[0], frames.shape[2]
        if num_frames > self.cfg.max_frame_pos:
            raise ValueError(f"{num_frames} frames exceed model.max_frame_pos ({self.cfg.max_frame_pos})")
        positions = torch.arange(num_frames, device=frames.device)
        frame_queries = self.encode_frames(frames) + self.video_frame_position_embedding(positions)[None, :, None, :]
        frame_hidden = frame_queries.reshape(batch, -1, frame_queries.shape[-1])
        frame_atts = torch.ones(frame_hidden.shape[:-1], dtype=torch.long, device=frames.device)
        video_queries = self.video_query_tokens.expand(batch, -1, -1)
        video_hidden = self.video_Qformer(query_embeds=video_queries, encoder_hidden_states=frame_hidden,
                                          encoder_attention_mask=frame_atts).last_hidden_state
        return self.llama_proj(video_hidden)

    def embed_with_video(self, input_ids, video_embeds):
        """Token embeddings with the <ImageHere> positions filled by the video tokens, in order."""
        is_patch = input_ids == self.im_patch_token_id
        counts = is_patch.sum(dim=1)
        if not torch.all(counts == video_embeds.shape[1]):
            raise ValueError(
                f"each sample needs exactly {video_embeds.shape[1]} {IMAGE_PATCH_TOKEN} placeholders "
                f"(model.num_video_query_token), found {counts.tolist()}; check datasets.*.num_video_query_token"
            )
        # The placeholder id may lie outside the LLM's vocabulary: swap it out before embedding.
        safe_ids = input_ids.masked_fill(is_patch, 0)
        embeds = self.llama_model.get_input_embeddings()(safe_ids)
        return embeds.masked_scatter(is_patch.unsqueeze(-1), video_embeds.to(embeds.dtype))

    def forward(self, samples):
        """``samples``: ``image`` (B, C, T, H, W) and either ``input_ids``/``labels``/``attention_mask``
        (instruction data) or ``text_input`` (captions, wrapped in a random prompt here)."""
        frames = samples["image"]
        if frames.dim() == 4:  # images are one-frame videos
            frames = frames.unsqueeze(2)
        if "input_ids" not in samples:
            samples = {**samples, **self.tokenize_captions(samples["text_input"], frames.device)}
        video_embeds = self.encode_video(frames)
        inputs_embeds = self.embed_with_video(samples["input_ids"], video_embeds)
        outputs = self.llama_model(inputs_embeds=inputs_embeds, attention_mask=samples["attention_mask"],
                                   labels=samples["labels"], return_dict=True)
        return {"loss": outputs.loss, "logits": outputs.logits}

    def tokenize_captions(self, captions, device, rng=random):
        """Caption data: each caption becomes the answer to a random prompt from prompt_path."""
        from video_llama.datasets.collate import pad_batch

        if not self.prompt_list:
            raise ValueError("caption data needs model.prompt_path: a file of prompts with <ImageHere>")
        items = []
        for caption in captions:
            prompt = rng.choice(self.prompt_list).replace(IMAGE_PATCH_TOKEN, IMAGE_PATCH_TOKEN * self.num_video_query_token)
            input_ids, labels = conversation_ids(self.llama_tokenizer, self.template, [(prompt, caption)],
                                                 first_prompt=self.prompt_template)
            # As in the original, max_txt_len limits the caption, never the prompt and its placeholders.
            keep = labels.count(IGNORE_INDEX) + self.max_txt_len
            items.append({"input_ids": input_ids[:keep], "labels": labels[:keep]})
        batch = pad_batch(items, self.llama_tokenizer.pad_token_id)
        return {k: v.to(device) for k, v in batch.items()}


def load_prompts(prompt_path):
    if not prompt_path:
        return []
    with open(prompt_path) as f:
        return [line.strip() for line in f if IMAGE_PATCH_TOKEN in line]


def load_tokenizer(name_or_path, key="datasets.*.tokenizer_name"):
    """The LLM's tokenizer with the <ImageHere> placeholder token; pads on the right with <unk>."""
    from transformers import AutoTokenizer

    from video_llama.common.hub import resolve_pretrained

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(name_or_path, key))
    tokenizer.add_tokens([IMAGE_PATCH_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_llm_and_tokenizer(name_or_path, dtype):
    from transformers import AutoModelForCausalLM

    from video_llama.common.hub import resolve_pretrained

    path = resolve_pretrained(name_or_path, "model.llama_model")
    tokenizer = load_tokenizer(path, "model.llama_model")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, low_cpu_mem_usage=True)
    return model, tokenizer
