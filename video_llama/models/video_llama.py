"""Video-LLaMA, vision-language branch, assembled from maintained parts.

    frames (B, C, T, H, W)
      → EVA ViT (timm) → ln_vision                       per frame: (B·T, 1 + patches, W_vit)
      → image Q-Former (transformers Blip2QFormerModel)   per frame: (B·T, num_query_token, 768)
      → + video_frame_position_embedding, flatten frames  (B, T·num_query_token, 768)
      → video Q-Former over video_query_tokens            (B, num_video_query_token, 768)
      → llama_proj                                        (B, num_video_query_token, D_llm)
      → replaces the <ImageHere> placeholders of the prompt → causal LM → loss on answer tokens

With ``equip_audio_branch`` the audio-language branch joins (``audio_branch.py``): its tokens come
before the video's, from the soundtrack in chat, from the frames when it trains.

The LLM is frozen (``freeze_llm``, as in the original); the other freezing flags decide the rest. Frozen modules stay in eval mode
even after ``model.train()`` (their dropout and norms must behave as at pretraining).
"""

import logging

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import is_fake

from video_llama.common.registry import registry
from video_llama.conversation import (
    IGNORE_INDEX,
    IMAGE_END,
    IMAGE_PATCH_TOKEN,
    IMAGE_START,
    VIDEO_END,
    VIDEO_START,
    conversation_ids,
    get_template,
    load_tokenizer,
    pad_batch,
    sound_and_video_placeholder,
    video_placeholder,
)
from video_llama.models import video_llama_config
from video_llama.models.audio_branch import AUDIO_PARTS, AudioLanguageBranch, frame_branches, visual_token_count
from video_llama.models.base_model import BaseModel
from video_llama.models.checkpoint import RANDOM
from video_llama.models.encoders import build_eva_vit, build_qformer

logger = logging.getLogger(__name__)

# the guide's "trainable layers" of both branches, trained in this run or not
BRANCH_PARTS = ("video_Qformer", "video_query_tokens", "video_frame_position_embedding", "llama_proj", *AUDIO_PARTS)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@registry.register_model("video_llama")
class VideoLLAMA(BaseModel, AudioLanguageBranch):
    BASE_CONFIG_PATH = "models/video_llama/base.yaml"
    DEFAULT_MODEL_TYPE = "pretrain_llama_v2"
    # top-level modules and parameters, for start-up checks of names such as run.lr_scales
    MODULE_NAMES = ("visual_encoder", "ln_vision", "Qformer", "query_tokens", "video_frame_position_embedding",
                    "video_Qformer", "video_query_tokens", "llama_model", "llama_proj", "audio_encoder",
                    *AUDIO_PARTS)
    DEPLOYMENT_KEYS = ("ckpt", "ckpt_2", "llama_proj_model", "llama_model", "vit_ckpt", "q_former_model",
                       "imagebind_ckpt_path",
                       "llama_dtype", "vit_precision",
                       "attn_implementation", "llm_load_in_8bit", "llm_load_in_4bit", "llm_grad_checkpoint",
                       "use_grad_checkpoint", "low_resource")
    RUN_HOLDS = ("ckpt_2", "llama_proj_model")  # see checkpoint_state_dict
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_llama_v2": "models/video_llama/pretrain_llama_v2.yaml",
        "pretrain_vicuna": "models/video_llama/pretrain_vicuna.yaml",
        "tiny": "models/video_llama/tiny.yaml",
    }
    # what the model: section means beyond its defaults: video_llama_config.py
    LEGACY_KEYS = video_llama_config.LEGACY_KEYS
    PATH_KEYS = video_llama_config.PATH_KEYS
    CHECKED_PATH_KEYS = video_llama_config.CHECKED_PATH_KEYS
    PROMPT_PATH_KEYS = video_llama_config.PROMPT_PATH_KEYS
    PROCESSOR_KEYS = {"image_size": "img_size"}  # frames come at the size the ViT is built for
    fill_derived = staticmethod(video_llama_config.fill_derived)
    config_problems = staticmethod(video_llama_config.config_problems)
    runtime_problems = staticmethod(video_llama_config.runtime_problems)

    def __init__(self, cfg, llama_model=None, llama_tokenizer=None, on_cuda=None):
        """Args:
        cfg: the resolved ``model:`` section (every key of base.yaml).
        llama_model, llama_tokenizer: the causal LM and its tokenizer; both None builds the
            vision-language part only (``cfg.llama_hidden_size`` must then be set), e.g. on meta.
        on_cuda: whether the model will run on a GPU (``vit_precision`` fp16 applies only there);
            None: whether this machine has one.
        """
        super().__init__()
        self.cfg = cfg
        self.num_video_query_token = cfg.num_video_query_token
        self.frame_branches = frame_branches(cfg)
        self.num_visual_tokens = visual_token_count(cfg)  # the placeholders of a prompt about frames

        self.visual_encoder = build_eva_vit(cfg).to(vit_dtype(cfg, on_cuda))
        if cfg.use_grad_checkpoint:  # recompute each block in backward: memory for compute
            self.visual_encoder.set_grad_checkpointing(True)
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
        self.weight_sources = {}  # parameter name → the config key of the file that filled it (load_pretrained_parts)
        self.has_audio_branch = bool(cfg.get("equip_audio_branch"))
        if self.has_audio_branch:
            self.build_audio_branch(cfg, llm_width, vit_dtype(cfg, on_cuda))
        self.template = get_template(cfg.template)
        if llama_tokenizer is not None:
            self.im_patch_token_id = llama_tokenizer.convert_tokens_to_ids(IMAGE_PATCH_TOKEN)
        if llama_model is not None and self.uses_lora:
            self.llama_model = add_lora(llama_model, cfg.lora)
        if llama_model is not None and cfg.llm_grad_checkpoint:  # backward recomputes each layer
            self.llama_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self._freeze()

    @property
    def uses_lora(self):
        return bool(self.cfg.lora and self.cfg.lora.r)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg, load_llm=True):
        llama_model = llama_tokenizer = None
        if load_llm:
            llama_model, llama_tokenizer = load_llm_and_tokenizer(cfg.llama_model, DTYPES[cfg.llama_dtype],
                                                                  cfg.attn_implementation, low_bit_config(cfg))
        model = cls(cfg, llama_model, llama_tokenizer)
        model.load_pretrained_parts()
        return model

    @classmethod
    def from_llm_config(cls, cfg, llm_config, on_cuda=None):
        """The model with its LLM built from ``llm_config`` (a transformers config) instead of
        loaded, in ``llama_dtype``, and no tokenizer: every weight random, or none at all when
        built under ``torch.device("meta")``. For the memory planner and shape checks."""
        from transformers import AutoModelForCausalLM

        llm = AutoModelForCausalLM.from_config(llm_config, dtype=DTYPES[cfg.llama_dtype],
                                               attn_implementation=cfg.attn_implementation)
        model = cls(cfg, llm, None, on_cuda=on_cuda)
        model.im_patch_token_id = llm_config.vocab_size  # the placeholder's id lies past the LLM's vocabulary
        return model

    def load_pretrained_parts(self):
        """The files the config names, in order: the EVA ViT, the BLIP-2 image Q-Former (LAVIS
        ``.pth`` or a Hugging Face BLIP-2 folder, which may bring the ViT too), ImageBind, then
        ``ckpt`` (the trainable part: a published VL checkpoint or one of ours),
        ``llama_proj_model`` (MiniGPT-4's projection, where ``ckpt`` brought none) and ``ckpt_2``
        (the audio branch's: a published AL checkpoint), as the original's eval config loads them."""
        from video_llama.common.hub import resolve_weights_file
        from video_llama.models.checkpoint import load_weights

        cfg = self.cfg
        sources = {}  # parameter name → the key of the file that filled it
        if cfg.vit_ckpt and cfg.vit_ckpt != RANDOM:  # LAVIS's eva_vit_g.pth: the ViT's own names
            report = load_weights(self, resolve_weights_file(cfg.vit_ckpt, "model.vit_ckpt"), "model.vit_ckpt",
                                  required_prefixes=("visual_encoder.",), add_prefix="visual_encoder.", component=True)
            sources.update(dict.fromkeys(report.loaded, "model.vit_ckpt"))
        if cfg.q_former_model and cfg.q_former_model != RANDOM:
            report = load_weights(self, resolve_weights_file(cfg.q_former_model, "model.q_former_model"),
                                  "model.q_former_model", required_prefixes=("Qformer.", "query_tokens"),
                                  wanted_prefixes=("vision_model.", "qformer.", "query_tokens"), component=True)
            sources.update(dict.fromkeys(report.loaded, "model.q_former_model"))
        if self.has_audio_branch:
            self.load_imagebind(sources)
        projection = {n for n, _ in self.llama_proj.named_parameters(prefix="llama_proj")}
        if cfg.ckpt and cfg.ckpt != RANDOM:  # the audio branch may come from ckpt_2, the projection from llama_proj_model
            provided = (set(sources) | (self.audio_branch_names() if cfg.get("ckpt_2") else set())
                        | (projection if cfg.get("llama_proj_model") else set()))
            report = load_weights(self, cfg.ckpt, "model.ckpt", required_prefixes=None, provided=provided)
            sources.update(dict.fromkeys(report.loaded, "model.ckpt"))
        elif cfg.ckpt == RANDOM:
            logger.warning("model.ckpt is 'random': the trainable part keeps its random initialisation (untrained)")
        if cfg.get("llama_proj_model") and not projection <= set(sources):  # MiniGPT-4's, where ckpt has none
            report = load_weights(self, cfg.llama_proj_model, "model.llama_proj_model",
                                  required_prefixes=("llama_proj.",), only=("llama_proj.",), component=True)
            sources.update(dict.fromkeys(report.loaded, "model.llama_proj_model"))
        if self.has_audio_branch:
            self.load_audio_branch(sources, random_on_purpose=cfg.ckpt == RANDOM)
        if self.llama_model is not None:  # loaded when the model was built; what model.ckpt held replaced it
            for name in self.llama_model.state_dict():
                sources.setdefault(f"llama_model.{name}", "model.llama_model")
        self.log_sources(sources)
        self.weight_sources = sources
        return sources

    def log_sources(self, sources):
        """One table at start-up: per module, which file filled it (or random) and what trains."""
        params = dict(self.named_parameters())
        rows = {}
        for name, param in params.items():
            module = name.split(".")[0]
            row = rows.setdefault(module, {"files": set(), "random": 0, "trainable": 0, "total": 0})
            row["files"].add(sources.get(name, "random"))
            row["trainable"] += param.numel() if param.requires_grad else 0
            row["total"] += param.numel()
        lines = [f"{'module':<32} {'weights from':<44} trainable"]
        for module, row in rows.items():
            origin = " + ".join(sorted(row["files"]))
            lines.append(f"{module:<32} {origin:<44} {row['trainable']:,} of {row['total']:,}")
        total = sum(row["trainable"] for row in rows.values())
        logger.info("where the weights come from (trainable parameters in all: %s):\n  %s", f"{total:,}",
                    "\n  ".join(lines))

    @classmethod
    def from_pretrained(cls, path, load_llm=True, **overrides):
        """One call for a model we trained: ``path`` is a run folder (its best checkpoint) or a
        checkpoint folder; the model is rebuilt from the config saved with it, then loaded.
        ``overrides`` replace ``model:`` keys (e.g. ``llama_model=`` when the LLM moved)."""
        from omegaconf import OmegaConf

        from video_llama.common.run_folder import BEST, CONFIG, resolve_checkpoint

        folder = resolve_checkpoint(path, prefer=BEST, key="from_pretrained")
        saved = OmegaConf.load(folder / CONFIG).model
        # over today's defaults, so that a run saved before a key existed still builds
        held = dict.fromkeys(cls.RUN_HOLDS)  # the folder holds what they gave the run
        cfg = OmegaConf.merge(cls.default_config(saved.model_type), saved, {**held, **overrides, "ckpt": str(folder)})
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
        if self.has_audio_branch:  # ImageBind is always frozen
            frozen += ["audio_encoder", *(AUDIO_PARTS if cfg.frozen_audio_Qformer else ())]
        return frozen

    def _freeze(self):
        for name in self.frozen_modules():
            part = getattr(self, name)
            if part is None:  # no LLM when built without one (e.g. on meta)
                continue
            part.requires_grad_(False)
            if name == "llama_model" and self.uses_lora:  # the adapters train on the frozen LLM
                for param_name, param in part.named_parameters():
                    param.requires_grad_("lora_" in param_name)
        self.train(self.training)

    def _stays_in_eval(self, name):
        """A frozen module runs in eval mode (no dropout, fixed norms), except an LLM with adapters
        or recomputation: LoRA's dropout and the LLM's checkpointing act only in train mode (LLaMA
        has no dropout of its own)."""
        return not (name == "llama_model" and (self.uses_lora or self.cfg.llm_grad_checkpoint))

    def train(self, mode=True):
        super().train(mode)
        for name in self.frozen_modules():
            part = getattr(self, name)
            if isinstance(part, nn.Module) and self._stays_in_eval(name):
                part.eval()
        return self

    def merge_lora(self):
        """Fold the LoRA adapters into the LLM's weights (the same outputs, no adapter cost)."""
        if self.uses_lora:
            self.llama_model = self.llama_model.merge_and_unload()
            self.cfg.lora.r = 0
        return self

    FROZEN_ENCODERS = ("visual_encoder", "ln_vision", "Qformer", "query_tokens")  # what a feature cache stands for

    def frozen_encoder_tensors(self):
        """(name, tensor) of every parameter and buffer of the ViT, ``ln_vision``, the image
        Q-Former and its query tokens: what a feature cache replaces."""
        tensors = []
        for part in self.FROZEN_ENCODERS:
            module = getattr(self, part)
            if isinstance(module, nn.Module):
                tensors += [(f"{part}.{name}", t) for name, t in module.state_dict(keep_vars=True).items()]
            else:
                tensors.append((part, module))
        return tensors

    def idle_image_encoders(self, datasets, run):
        """Why the frozen ViT and image Q-Former do no work in a training run of ``datasets`` and
        ``run`` (their config sections), so that they may stay off the device
        (:meth:`release_frozen_encoders`); None when they work. Either training reads their outputs
        from feature caches and evaluates nothing from pixels, or the frames feed the audio branch
        alone and no dataset is heard (sound would send the frames to the video branch)."""
        if video_llama_config.frozen_encoders_problem(self.cfg):  # they train
            return None
        if datasets and all(d.get("feature_cache") for d in datasets.values()) and not (run.valid_splits or run.evaluate):
            return "training reads their outputs from feature caches and evaluates nothing from pixels"
        if self.frame_branches == ("audio",) and not any(d.get("sound") for d in datasets.values()):
            return "the frames feed the audio branch alone (through ImageBind)"
        return None

    def release_frozen_encoders(self):
        """Drop the frozen ViT and image Q-Former (their memory with them): for a run that reads
        their outputs from a feature cache and never needs pixels. Returns the bytes released."""
        if self.cfg.freeze_vit is not True or self.cfg.freeze_qformer is not True:
            raise ValueError("only frozen encoders can be released: model.freeze_vit and freeze_qformer must be True")
        released = sum(t.numel() * t.element_size() for _, t in self.frozen_encoder_tensors())
        for part in self.FROZEN_ENCODERS:
            setattr(self, part, None)
        return released

    def fsdp_units(self):
        """The submodules to shard one by one (``run.strategy: fsdp``), innermost first, before the
        model itself: each LLM decoder layer, the input embeddings (called apart from the LLM's
        forward), the rest of the LLM and the ViT. Each unit's parameters share one dtype (the LLM
        may be bf16 and the ViT fp16 beside fp32 Q-Formers), as FSDP gathers a unit in one piece."""
        units = []
        if self.llama_model is not None:
            llm = self.llama_model.get_base_model() if hasattr(self.llama_model, "get_base_model") else self.llama_model
            units += [*llm.get_decoder().layers, llm.get_input_embeddings(), self.llama_model]
        if self.has_audio_branch:  # its own dtype (the ViT's) beside the fp32 audio Q-Former
            units.append(self.audio_encoder)
        return units + ([self.visual_encoder] if self.visual_encoder is not None else [])

    def fsdp_forward_methods(self):
        """(module, method) pairs that run a unit's parameters outside ``forward``."""
        return [(self, "score"), (self, "generate"), (self.visual_encoder, "forward_features")]

    def frozen_encoders_fingerprint(self):
        """A short digest of the ViT's, ``ln_vision``'s and the image Q-Former's weights (their
        shapes, sums and sums of squares, to 6 digits): what a feature cache was made with."""
        import hashlib

        digest = hashlib.sha1()
        for name, tensor in self.frozen_encoder_tensors():
            values = tensor.detach().double()
            digest.update(f"{name}{tuple(tensor.shape)}{values.sum().item():.6g}{values.square().sum().item():.6g}".encode())
        return digest.hexdigest()[:16]

    def checkpoint_state_dict(self):
        """What a checkpoint holds: what trains, and the branches' parts (``BRANCH_PARTS``) that
        ``ckpt``, ``ckpt_2`` or ``llama_proj_model`` gave: a run that trains one branch keeps the
        other, frozen, as it started, so that its folder alone rebuilds the model. The pretrained
        encoders and the LLM come from their own files."""
        given = {n for n, source in self.weight_sources.items()
                 if source in ("model.ckpt", "model.ckpt_2", "model.llama_proj_model") and n.split(".")[0] in BRANCH_PARTS}
        saved = {n for n, p in self.named_parameters() if p.requires_grad or n in given}
        return {n: t for n, t in self.state_dict().items() if n in saved}

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

    def encode_video(self, frames=None, frame_features=None):
        """(B, C, T, H, W) frames → (B, num_video_query_token, D_llm) soft tokens. Instead of
        frames, ``frame_features``: what :meth:`encode_frames` gives for them, (B, T, Q, D), read
        from a feature cache (the ViT and the image Q-Former must be frozen)."""
        if frame_features is None:
            frame_features = self.encode_frames(frames)
        elif problem := video_llama_config.frozen_encoders_problem(self.cfg):
            raise ValueError(problem)
        batch, num_frames = frame_features.shape[0], frame_features.shape[1]
        if num_frames > self.cfg.max_frame_pos:
            raise ValueError(f"{num_frames} frames exceed model.max_frame_pos ({self.cfg.max_frame_pos})")
        device = frame_features.device
        positions = torch.arange(num_frames, device=device)
        frame_queries = frame_features.float() + self.video_frame_position_embedding(positions)[None, :, None, :]
        frame_hidden = frame_queries.reshape(batch, -1, frame_queries.shape[-1])
        frame_atts = torch.ones(frame_hidden.shape[:-1], dtype=torch.long, device=device)
        video_queries = self.video_query_tokens.expand(batch, -1, -1)
        video_hidden = self.video_Qformer(query_embeds=video_queries, encoder_hidden_states=frame_hidden,
                                          encoder_attention_mask=frame_atts).last_hidden_state
        return self.llama_proj(video_hidden)

    def encode_visual(self, frames=None, frame_features=None, sound=None):
        """The LLM tokens of a clip, in prompt order: with ``sound`` (B, clips, 1, mel, time) the
        audio branch's of it, then the video branch's of the frames; without, those of the
        branches the frames feed (``frame_branches``). Frames (B, C, T, H, W), or
        ``frame_features`` of a feature cache (video branch only)."""
        if sound is not None:
            return torch.cat([self.encode_audio(sound=sound), self.encode_video(frames)], dim=1)
        if "audio" in self.frame_branches and frame_features is not None:
            raise ValueError("the audio branch trains on frames through ImageBind, which a feature cache of the image "
                             "Q-Former does not hold; remove the datasets' feature_cache")
        tokens = [self.encode_audio(frames=frames) if branch == "audio" else self.encode_video(frames, frame_features)
                  for branch in self.frame_branches]
        return tokens[0] if len(tokens) == 1 else torch.cat(tokens, dim=1)

    def embed_with_video(self, input_ids, video_embeds):
        """Token embeddings with the <ImageHere> positions filled by the visual tokens, in order."""
        is_patch = input_ids == self.im_patch_token_id
        counts = is_patch.sum(dim=1)
        if has_values(counts) and not torch.all(counts == video_embeds.shape[1]):
            raise ValueError(
                f"each sample needs exactly {video_embeds.shape[1]} {IMAGE_PATCH_TOKEN} placeholders (the tokens the "
                f"model gives the frames, model.num_visual_tokens), found {counts.tolist()}; check "
                "datasets.*.num_video_query_token"
            )
        # The placeholder id may lie outside the LLM's vocabulary: swap it out before embedding.
        safe_ids = input_ids.masked_fill(is_patch, 0)
        embeds = self.llama_model.get_input_embeddings()(safe_ids)
        return embeds.masked_scatter(is_patch.unsqueeze(-1), video_embeds.to(embeds.dtype))

    def forward(self, samples, num_items_in_batch=None):
        """Next-token loss on the answer tokens.

        Args:
            samples: ``image`` (B, C, T, H, W), or (B, C, H, W) for images (one-frame videos), or
                ``frame_features`` (B, T, Q, D) of a feature cache; and ``input_ids``, ``labels``
                (-100 outside answers), ``attention_mask``.
            num_items_in_batch: the answer tokens of the whole effective batch (all accumulated
                micro-batches, all ranks). Given, the loss is this batch's token sum divided by
                it, so that summing over the window weighs every answer token alike; None, the
                mean over this batch's answer tokens.
        Returns:
            {"loss": scalar, "logits": (B, L, vocab)}
        """
        if "frame_features" in samples:  # a feature cache's: the frozen encoders' work done once
            video = self.encode_visual(frame_features=samples["frame_features"])
        else:
            frames = samples["image"]
            if frames.dim() == 4:  # images are one-frame videos
                frames = frames.unsqueeze(2)
            video = self.encode_visual(frames)
        inputs_embeds = self.embed_with_video(samples["input_ids"], video)
        outputs = self.llama_model(inputs_embeds=inputs_embeds, attention_mask=samples["attention_mask"],
                                   labels=samples["labels"], num_items_in_batch=num_items_in_batch, return_dict=True)
        return {"loss": outputs.loss, "logits": outputs.logits}

    # ------------------------------------------------------------------ asking the model
    def conversation(self, question, answer=None, history=(), image=False, template=None, sound=False):
        """(input_ids, labels) of ``question`` (and ``answer``, if given) about the video after the
        ``history`` turns, exactly as training built them (``template``: another prompt format
        than the model's, e.g. the original demo's): the video placeholder (``<Image>`` tags for
        an image) opens the first question. With ``sound``, the original demo's sentence with the
        audio placeholders, then the video's, opens it instead. Without an answer the ids end
        where the answer starts."""
        if sound:
            visual = sound_and_video_placeholder(self.cfg.num_audio_query_token, self.num_video_query_token)
        else:
            tags = (IMAGE_START, IMAGE_END) if image else (VIDEO_START, VIDEO_END)
            visual = video_placeholder(self.num_visual_tokens, *tags)
        turns = [*history, (question, answer)]
        turns[0] = (f"{visual} {turns[0][0]}", turns[0][1])
        return conversation_ids(self.llama_tokenizer, template or self.template, turns)

    def prompt_ids(self, question, history=(), image=False, template=None, sound=False):
        """Token ids of the prompt for ``question``, ending where the model's answer starts."""
        return self.conversation(question, None, history, image, template, sound)[0]

    @torch.no_grad()
    def score(self, frames, questions, answers, length_normalize=False, chunk_size=16, sound=None):
        """Log-likelihood of each of ``answers`` (the answer tokens and the end symbol) as the
        reply to each question about its clip.

        Only the answer positions go through the LM head, and ``chunk_size`` answers at a time:
        full-vocabulary log-probabilities of every position of every answer would not fit at 7B with
        hundreds of labels.

        Args:
            frames: (B, C, T, H, W), or (B, C, H, W) images; questions: B strings; answers: A strings.
            length_normalize: the mean log-probability per answer token instead of the sum.
            sound: (B, clips, 1, mel, time) filterbanks of the clips' soundtracks, for a model with
                the audio branch (see :meth:`encode_visual`).
        Returns:
            float tensor (B, A) on the CPU.
        """
        tokenizer = self.llama_tokenizer
        image = frames.dim() == 4
        video = self.encode_visual(frames.unsqueeze(2) if image else frames, sound=sound)
        decoder, head = self.llama_model.get_decoder(), self.llama_model.get_output_embeddings()
        scores = torch.empty(len(questions), len(answers))
        for row, question in enumerate(questions):
            for start in range(0, len(answers), chunk_size):
                chunk = [self.conversation(question, answer, image=image, sound=sound is not None)
                         for answer in answers[start:start + chunk_size]]
                items = [{"input_ids": ids, "labels": labels} for ids, labels in chunk]
                batch = {k: v.to(frames.device) for k, v in pad_batch(items, tokenizer.pad_token_id).items()}
                embeds = self.embed_with_video(batch["input_ids"], video[row:row + 1].expand(len(chunk), -1, -1))
                hidden = decoder(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).last_hidden_state
                next_labels = batch["labels"][:, 1:]
                which, where = (next_labels != IGNORE_INDEX).nonzero(as_tuple=True)
                logits = head(hidden[which, where]).float()  # (answer tokens in the chunk, vocab)
                picked = logits.log_softmax(-1).gather(-1, next_labels[which, where].unsqueeze(-1)).squeeze(-1)
                total = torch.zeros(len(chunk), device=picked.device).index_add_(0, which, picked)
                if length_normalize:
                    lengths = [sum(label != IGNORE_INDEX for label in labels) for _, labels in chunk]
                    total = total / torch.tensor(lengths, device=total.device)
                scores[row, start:start + len(chunk)] = total.cpu()
        return scores

    @torch.no_grad()
    def generate(self, frames, questions, max_new_tokens=16, histories=None, template=None, sound=None,
                 **generation_kwargs):
        """Answers (text) to one question per clip (``histories``: the earlier (question, answer)
        turns of each); greedy unless ``generation_kwargs`` say otherwise (a ``streamer`` gets the
        tokens as they come). (B, C, H, W) frames are images; ``sound`` as in :meth:`score`. Prompts (in ``template``, else the
        model's) are left-padded so that every answer starts at the same place; an answer stops at
        the template's end symbol, which is cut off."""
        tokenizer = self.llama_tokenizer
        template = template or self.template
        image = frames.dim() == 4
        if image:
            frames = frames.unsqueeze(2)
        prompts = [self.prompt_ids(q, h, image, template, sound is not None)
                   for q, h in zip(questions, histories or [()] * len(questions))]
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, length - len(prompt):] = torch.tensor(prompt)
            mask[row, length - len(prompt):] = 1
        ids, mask = ids.to(frames.device), mask.to(frames.device)
        embeds = self.embed_with_video(ids, self.encode_visual(frames, sound=sound))
        settings = {"do_sample": False, **generation_kwargs}
        if not template.end_is_eos:  # vicuna's "###": stop on the text, as the original's stopping criterion
            settings.update(stop_strings=[template.end_sym], tokenizer=tokenizer)
        out = self.llama_model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id,
                                        **settings)
        texts = tokenizer.batch_decode(out, skip_special_tokens=True)
        if not template.end_is_eos:
            texts = [t.split(template.end_sym)[0] for t in texts]
        return [t.strip() for t in texts]


def vit_dtype(cfg, on_cuda=None):
    """The ViT's dtype: fp16 for ``vit_precision: fp16`` on a GPU (``on_cuda``; None: this
    machine has one), else fp32 (CPU kernels are slow or missing in fp16)."""
    on_cuda = torch.cuda.is_available() if on_cuda is None else on_cuda
    return DTYPES["fp16"] if cfg.vit_precision == "fp16" and on_cuda else torch.float32


def has_values(tensor):
    """Whether ``tensor`` holds data that can be read: not on the meta device, not a fake tensor
    (the memory planner runs the model on those, which have shapes only)."""
    return not (tensor.is_meta or is_fake(tensor))


def load_llm_and_tokenizer(name_or_path, dtype, attn_implementation="sdpa", quantization_config=None):
    """The causal LM and its tokenizer. A quantised LLM (``quantization_config``) is placed while
    it loads, on this process's GPU (``torch.cuda.current_device()``: train.py and evaluate.py
    select ``cuda:LOCAL_RANK`` before building, the demo its ``run.device``), as the original did
    with ``device_map={'': device_8bit}``; it can never move afterwards (see :func:`move_to_device`)."""
    from transformers import AutoModelForCausalLM

    from video_llama.common.hub import resolve_pretrained

    path = resolve_pretrained(name_or_path, "model.llama_model")
    tokenizer = load_tokenizer(path, "model.llama_model")
    placement = {"device_map": {"": torch.cuda.current_device()}} if quantization_config is not None else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, low_cpu_mem_usage=True,
                                                 attn_implementation=attn_implementation,
                                                 quantization_config=quantization_config, **placement)
    if quantization_config is not None:
        refuse_moves(model, low_bit_setting(quantization_config))
    return model, tokenizer


def low_bit_config(cfg):
    """bitsandbytes settings for ``llm_load_in_8bit`` / ``llm_load_in_4bit`` (NF4, double
    quantisation, computing in the LLM's dtype), or None. The config check has made sure that a
    CUDA GPU and bitsandbytes are there."""
    if not (cfg.llm_load_in_8bit or cfg.llm_load_in_4bit):
        return None
    from transformers import BitsAndBytesConfig

    if cfg.llm_load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=DTYPES[cfg.llama_dtype])


def low_bit_setting(quantization_config):
    """The ``model:`` key that asked for ``quantization_config``, for messages."""
    return "model.llm_load_in_4bit" if getattr(quantization_config, "load_in_4bit", False) else "model.llm_load_in_8bit"


def is_quantized(module):
    """Whether ``module`` is a quantised Hugging Face model (or a peft wrapper around one)."""
    return getattr(module, "is_quantized", False) is True


def refuse_moves(llm, setting):
    """Make every later move or cast of ``llm`` (``.to``, ``.cuda``, ``.half``, ..., its own or
    that of a module holding it: all reach ``_apply``) a UserError naming ``setting``, instead of
    a failure deep inside bitsandbytes: its weights were quantised onto their device as they loaded."""
    from video_llama.common.errors import UserError

    def _apply(*args, **kwargs):
        raise UserError(f"{setting}: the LLM was quantised by bitsandbytes onto {_device_of(llm)} as it loaded and "
                        "cannot be moved or cast afterwards; move the rest of the model with "
                        "video_llama.models.video_llama.move_to_device(model, device), or set "
                        f"{setting}=False to load the LLM unquantised")

    llm._apply = _apply  # this instance only; torch's recursion calls the child's _apply


def move_to_device(model, device):
    """``model.to(device)`` for everything except a quantised LLM, which sits where it was loaded.

    Returns:
        ``model``.
    Raises:
        UserError: naming the setting, when the quantised LLM sits on another device than ``device``.
    """
    from video_llama.common.errors import UserError

    device = torch.device(device)
    held = list(_quantized_children(model))
    for _, _, llm in held:
        where = _device_of(llm)
        if where is not None and not _same_device(where, device):
            setting = low_bit_setting(getattr(getattr(llm, "config", None), "quantization_config", None))
            raise UserError(f"{setting}: the quantised LLM was loaded onto {where}, but the model is to run on "
                            f"{device}; it loads onto the current CUDA device, so select that first "
                            "(torch.cuda.set_device) or set run.device to it")
    for parent, name, _ in held:  # out of the way while the rest moves
        parent._modules[name] = None
    try:
        model.to(device)
    finally:
        for parent, name, llm in held:
            parent._modules[name] = llm
    return model


def _quantized_children(module):
    """(parent, name, child) for each outermost quantised submodule of ``module``."""
    for name, child in module.named_children():
        if is_quantized(child):
            yield module, name, child
        else:
            yield from _quantized_children(child)


def _device_of(module):
    return next((p.device for p in module.parameters()), None)


def _same_device(a, b):
    """``cuda`` (no index: the current GPU) matches any ``cuda:N``."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def add_lora(llama_model, lora_cfg):
    """The LLM with LoRA adapters on ``target_modules`` (peft); only the adapters will train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                        target_modules=list(lora_cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(llama_model, config)
