"""What ``video-llama cache-features`` does: run the frozen ViT and image Q-Former once over the
training clips of an experiment and keep their outputs (datasets/datasets/feature_cache.py says
what the cache is and how training reads it); and the start-up check that a cache fits the model.

One view with the evaluation processor is exactly what training computes from pixels with that
processor; ``views`` > 1 runs the training processor that many times per clip (its random frames
and crop), and training draws one view per visit.
"""

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from video_llama.common.errors import UserError
from video_llama.common.registry import registry
from video_llama.common.utils import seed_everything, seeded
from video_llama.datasets.datasets.feature_cache import CACHE_INFO, TENSOR, FeatureCacheError
from video_llama.models.video_llama_config import frozen_encoders_problem

logger = logging.getLogger(__name__)


def encoder_identity(model):
    """What a cache's features depend on besides the clips: the frozen encoders and their inputs."""
    cfg = model.cfg
    return {"fingerprint": model.frozen_encoders_fingerprint(), "img_size": cfg.img_size,
            "num_query_token": cfg.num_query_token, "qformer_hidden_size": cfg.qformer_hidden_size}


def check_trains_from_cache(model, datasets):
    """Refuse a run whose frozen encoders are not those its feature cache was made with (that
    they are frozen is checked with the config, ``video_llama_config.config_problems``)."""
    caches = [d.feature_cache for splits in datasets.values() for d in splits.values()
              if getattr(d, "feature_cache", None) is not None]
    if not caches:
        return
    identity = encoder_identity(model)
    for cache in caches:
        cache.check_encoders(identity, where="this model")


def write_feature_cache(cfg_path, out, views=1, options=(), plugins=(), batch_frames=64):
    """Write the cache of the training split of ``cfg_path``'s first dataset into ``out``.
    Returns the cache's description (``cache.json``)."""
    from safetensors.torch import save_file

    from video_llama.common.config import Config

    if views < 1:
        raise UserError(f"--views must be at least 1, not {views}")
    cfg = Config.from_file(cfg_path, list(options), list(plugins))
    if problem := frozen_encoders_problem(cfg.model_cfg):  # before minutes of loading the model
        raise FeatureCacheError(problem)
    name, dataset_cfg = next(iter(cfg.datasets_cfg.items()))
    processors = dataset_cfg.vis_processor
    processor_cfg = processors.train if views > 1 else processors.get("eval", processors.train)
    dataset_cfg = OmegaConf.merge(dataset_cfg, {"vis_processor": {"train": processor_cfg}, "feature_cache": None})
    builder = registry.get_builder_class(name)(dataset_cfg)
    builder.wanted_splits = {"train"}
    built = builder.build_datasets()
    if "train" not in built:
        raise FeatureCacheError(f"datasets.{name} has no train split to cache (build_info.anno_dir); cache-features "
                                "writes the training clips' features")
    dataset = built["train"]
    dataset.substitute_unreadable = False
    if not hasattr(dataset.vis_processor, "clip_info"):
        raise FeatureCacheError(f"datasets.{name}: cache-features caches video clips; its processor "
                                f"({type(dataset.vis_processor).__name__}) is not a video processor")
    if dataset.cuts_windows:
        raise FeatureCacheError(f"datasets.{name}.vis_processor cuts windows (window_s): a cache holds the frames of "
                                "one sampling made ahead of time; cache clips taken whole")
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    seed_everything(cfg.run_cfg.seed)  # as train.py seeds rank 0 before building: random encoders come out alike
    model = task.build_model(cfg).eval()
    device = torch.device("cuda" if torch.cuda.is_available() and str(cfg.run_cfg.device).startswith("cuda") else "cpu")
    for _, tensor in model.frozen_encoder_tensors():  # only what encode_frames runs: not the LLM
        tensor.data = tensor.data.to(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CACHE_INFO).unlink(missing_ok=True)  # the folder is a cache again only when complete
    clips, skipped, start = {}, {}, time.perf_counter()
    for index, record in enumerate(dataset.records):
        features, infos = [], []
        for view in range(views):
            with seeded(cfg.run_cfg.seed * 1_000_003 + index * views + view):
                try:
                    frames, info, _ = dataset.read_visual(dataset.video_path(record))
                except Exception as err:  # noqa: BLE001 - a clip the decoders cannot read: reported, left out
                    skipped[record["video"]] = str(err)
                    break
            with torch.no_grad():
                features.append(encode_in_chunks(model, frames.to(device), batch_frames).half().cpu())
            infos.append({"num_frames": info.num_frames, "fps": info.fps, "indices": list(info.indices), "window": False})
        if len(features) < views:
            logger.warning("cache-features: skipping %s (%s)", record["video"], skipped[record["video"]])
            continue
        file = f"{index:08d}.safetensors"
        save_file({TENSOR: torch.stack(features).contiguous()}, str(out / file), metadata={TENSOR: json.dumps(infos)})
        clips[record["video"]] = file
    description = {
        "views": views, "processor": OmegaConf.to_container(processor_cfg, resolve=True),
        "encoders": encoder_identity(model), "annotations": [str(f) for f in dataset.anno_files],
        "clips": clips, "skipped": skipped, "made_with": {"cfg_path": str(cfg_path), "options": list(options)},
    }
    (out / CACHE_INFO).write_text(json.dumps(description, indent=1) + "\n")
    logger.info("cache-features: %d clips × %d view(s) in %.1f s into %s (%d skipped)", len(clips), views,
                time.perf_counter() - start, out, len(skipped))
    return description


def encode_in_chunks(model, frames, batch_frames):
    """(C, T, H, W) frames → (T, Q, D): the frozen encoders' output per frame, ``batch_frames`` at a time."""
    chunks = [model.encode_frames(frames[None, :, i:i + batch_frames])[0] for i in range(0, frames.shape[1], batch_frames)]
    return torch.cat(chunks)

