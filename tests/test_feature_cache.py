"""The feature cache: the frozen encoders' outputs computed once and read instead of pixels."""

import json
import math

import pytest
import torch


EVAL_FOR_TRAIN = ("datasets.webvid_instruct.vis_processor.train.name=alpro_video_eval",
                  "datasets.webvid_instruct.vis_processor.train.n_frms=4",
                  "datasets.webvid_instruct.vis_processor.eval.n_frms=4", "datasets.webvid_instruct.timestamps=True",
                  "model.vit_ckpt=random", "model.q_former_model=random", "run.seed=3")


@pytest.fixture(scope="module")
def cached(tiny_llm_dir, clips_dir, tmp_path_factory):
    """A tiny experiment (frozen encoders) and the cache of its training clips, one eval view each."""
    from video_llama.jobs.feature_cache import write_feature_cache

    anno = tmp_path_factory.mktemp("anno") / "train.json"
    records = json.loads((clips_dir / "train.json").read_text())
    anno.write_text(json.dumps(records + [{"video": "broken.mp4", "QA": records[0]["QA"]}]))
    options = [f"model.llama_model={tiny_llm_dir}", f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
               f"datasets.webvid_instruct.build_info.anno_dir={anno}",
               f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}", *EVAL_FOR_TRAIN]
    out = tmp_path_factory.mktemp("features")
    made = write_feature_cache("train_configs/tiny_cpu_finetune.yaml", out, 1, options)
    return options, out, made


def build_run(options, *more):
    from video_llama.common.config import Config
    from video_llama.common.registry import registry
    from video_llama.common.utils import seed_everything

    cfg = Config.from_file("train_configs/tiny_cpu_finetune.yaml", [*options, *more])
    seed_everything(cfg.run_cfg.seed)  # as train.py and cache-features do: the same random tiny encoders
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    model = task.build_model(cfg)
    builder = registry.get_builder_class("webvid_instruct")(cfg.datasets_cfg.webvid_instruct)
    builder.wanted_splits = {"train"}
    return cfg, model, {"webvid_instruct": builder.build_datasets()}


def test_training_from_the_cache_is_training_from_pixels(cached):
    from video_llama.conversation.collate import collate_video_samples
    from video_llama.jobs.feature_cache import check_trains_from_cache

    options, out, made = cached
    assert len(made["clips"]) == 4 and list(made["skipped"]) == ["broken.mp4"]  # the broken clip is reported, left out
    _, model, pixels = build_run(options)
    _, _, features = build_run(options, f"datasets.webvid_instruct.feature_cache={out}")
    check_trains_from_cache(model, features)  # the same encoders: accepted
    pixel_data, cache_data = pixels["webvid_instruct"]["train"], features["webvid_instruct"]["train"]
    pad = pixel_data.tokenizer.pad_token_id
    from_pixels = collate_video_samples([pixel_data[0], pixel_data[1]], pad)
    from_cache = collate_video_samples([cache_data[0], cache_data[1]], pad)
    assert "image" not in from_cache and from_cache["frame_features"].shape[:3] == (2, 4, model.cfg.num_query_token)
    assert from_cache["input_ids"].tolist() == from_pixels["input_ids"].tolist()  # timestamps of the same frames
    model.eval()
    loss_pixels, loss_cache = model(from_pixels)["loss"], model(from_cache)["loss"]
    assert loss_cache.item() == pytest.approx(loss_pixels.item(), rel=1e-3)  # fp16 features


def test_a_cache_is_refused_where_it_cannot_stand_for_the_pixels(cached):
    from video_llama.common.config import Config, ConfigError
    from video_llama.datasets.datasets.feature_cache import FeatureCacheError
    from video_llama.jobs.feature_cache import check_trains_from_cache, write_feature_cache

    options, out, _ = cached
    cache = f"datasets.webvid_instruct.feature_cache={out}"
    for key in ("freeze_vit", "freeze_qformer"):  # refused with the config, before building, naming the key
        training = [f"model.{key}=False", "model.vit_precision=fp32"]
        with pytest.raises(ConfigError, match=f"feature_cache: model.{key} is False, but a feature cache holds"):
            Config.from_file("train_configs/tiny_cpu_finetune.yaml", [*options, cache, *training])
        with pytest.raises(FeatureCacheError, match=f"model.{key} is False.*set model.{key}=True"):
            write_feature_cache("train_configs/tiny_cpu_finetune.yaml", out / "unused", 1, [*options, *training])
    with pytest.raises(ConfigError, match="feature_cache is read beside annotation files"):
        Config.from_file("train_configs/tiny_cpu_finetune.yaml", [*options, cache, "datasets.webvid_instruct.build_info.shards=x.tar"])
    _, other, data = build_run(options, cache)
    torch.manual_seed(5)
    from video_llama.common.registry import registry

    other = registry.get_model_class("video_llama").from_config(other.cfg)  # other random encoders
    with pytest.raises(FeatureCacheError, match="other encoders"):
        check_trains_from_cache(other, data)
    with pytest.raises(FeatureCacheError, match="window_s"):
        build_run(options, cache, "datasets.webvid_instruct.vis_processor.train.window_s=1.0")
    with pytest.raises(FeatureCacheError, match="cache.json"):
        build_run(options, f"datasets.webvid_instruct.feature_cache={out / 'nowhere'}")
    with pytest.raises(FeatureCacheError, match="holds 4 frames a clip, the training processor takes 6"):
        build_run(options, cache, "datasets.webvid_instruct.vis_processor.train.n_frms=6")


def test_a_cache_of_other_clips_is_refused_at_start_up(cached, clips_dir, tmp_path):
    from video_llama.datasets.datasets.feature_cache import FeatureCacheError

    options, out, _ = cached
    records = json.loads((clips_dir / "train.json").read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{**records[0], "video": "short.avi"}, *records]))  # a clip the cache never saw
    with pytest.raises(FeatureCacheError, match=r"no features of 1 clips .*short.avi"):
        build_run([*options, f"datasets.webvid_instruct.build_info.anno_dir={other}"],
                  f"datasets.webvid_instruct.feature_cache={out}")


def test_a_run_trains_from_the_cache_without_the_frozen_encoders(cached, tmp_path, caplog):
    from video_llama.jobs.experiment import train

    options, out, _ = cached
    with caplog.at_level("INFO"):
        summary = train(["--cfg-path", "train_configs/tiny_cpu_finetune.yaml", "--options", *options,
                         f"datasets.webvid_instruct.feature_cache={out}", "run.max_epoch=1", "run.iters_per_epoch=3",
                         "run.num_workers=0", f"run.output_dir={tmp_path}", "run.device=cpu", "run.amp=False"])
    assert "the ViT and image Q-Former" in caplog.text and "stay off cpu" in caplog.text
    assert summary["steps"] == 3 and math.isfinite(summary["final_loss"])
    assert summary["bad_clips"] == 1  # broken.mp4, left out of the cache, counted as the pixel path counts it
    assert list(tmp_path.glob("*/checkpoint_e1_s0"))  # trained and saved, the encoders never loaded on the device
