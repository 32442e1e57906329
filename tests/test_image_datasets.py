"""Images beside videos: cc_sbu_align, llava_instruct, image_instruct, webvid_instruct_zh, and a mix."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT, TINY_CONFIG


def write_image(path, seed, fmt="JPEG"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path, format=fmt)


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    """cc_sbu_align (3 images, one corrupt), LLaVA (two-turn conversations, COCO names), and the
    guide's format for images (one PNG)."""
    root = tmp_path_factory.mktemp("image_data")
    align = root / "cc_sbu_align"
    for i in (1, 2):
        write_image(align / "image" / f"{i}.jpg", i)
    (align / "image" / "3.jpg").write_bytes(b"not a jpeg")
    captions = [{"image_id": i, "caption": f"picture number {i}"} for i in (1, 2, 3)]
    (align / "filter_cap.json").write_text(json.dumps({"annotations": captions}))
    coco = root / "coco"
    for i in (1, 2):
        write_image(coco / f"COCO_train2014_{i:012d}.jpg", 10 + i)
    llava = [{"id": str(i), "image": f"{i:012d}.jpg", "conversations": [
        {"from": "human", "value": "What colour is it?\n<image>" if i == 1 else "<image>\nWhat colour is it?"},
        {"from": "gpt", "value": f"colour {i}"},
        {"from": "human", "value": "And its shape?"},
        {"from": "gpt", "value": f"shape {i}"}]} for i in (1, 2)]
    (root / "llava.json").write_text(json.dumps(llava))
    write_image(root / "mine" / "still.png", 20, "PNG")
    (root / "mine.json").write_text(json.dumps([{"image": "still.png", "QA": [{"q": "Which mode?", "a": "greet_mode"}]}]))
    return root


def recipe(tmp_path, llm, clips, data, datasets, **run):
    """The tiny recipe with ``datasets`` (names) pointed at the test data."""
    tiny = yaml.safe_load(TINY_CONFIG.read_text())
    tiny["model"]["llama_model"] = str(llm)
    image_procs = {"train": {"name": "blip2_image_train", "image_size": 112},
                   "eval": {"name": "blip2_image_eval", "image_size": 112}}
    common = {"tokenizer_name": str(llm), "model_type": "llama_v2", "num_video_query_token": 32}
    entries = {
        "cc_sbu_align": {"build_info": {"storage": str(data / "cc_sbu_align")}, "vis_processor": image_procs, **common},
        "llava_instruct": {"build_info": {"anno_dir": str(data / "llava.json"), "videos_dir": str(data / "coco")},
                           "vis_processor": image_procs, **common},
        "image_instruct": {"build_info": {"anno_dir": str(data / "mine.json"), "videos_dir": str(data / "mine")},
                           "vis_processor": image_procs, **common},
        "webvid_instruct": {**tiny["datasets"]["webvid_instruct"], "tokenizer_name": str(llm),
                            "build_info": {"anno_dir": str(clips / "train.json"), "videos_dir": str(clips)}},
        "webvid_instruct_zh": {**{k: v for k, v in tiny["datasets"]["webvid_instruct"].items() if k != "data_type"},
                               "tokenizer_name": str(llm),
                               "build_info": {"anno_dir": str(clips / "train.json"), "videos_dir": str(clips)}},
    }
    tiny["datasets"] = {name: {**entries[name], **extra} for name, extra in datasets.items()}
    tiny["run"].update(output_dir=str(tmp_path / "out"), **run)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny))
    return path


def build(path, name):
    from video_llama.common.config import Config
    from video_llama.common.registry import registry

    cfg = Config.from_file(path)
    return registry.get_builder_class(name)(cfg.datasets_cfg[name]).build_datasets()["train"]


def trained_text(tokenizer, sample):
    from video_llama.conversation.templates import IGNORE_INDEX

    return tokenizer.decode([t for t in sample["labels"].tolist() if t != IGNORE_INDEX], skip_special_tokens=True)


def test_cc_sbu_align_captions_answer_a_prompt_about_the_image(tiny_llm_dir, clips_dir, image_data, tmp_path):
    dataset = build(recipe(tmp_path, tiny_llm_dir, clips_dir, image_data, {"cc_sbu_align": {}}), "cc_sbu_align")
    assert len(dataset) == 3
    dataset.substitute_unreadable = False
    samples = [dataset[i] for i in range(3)]
    assert samples[2]["unreadable"] == "image/3.jpg" and "not an image file" in samples[2]["error"]
    assert len(dataset.failed) == 1  # counted like an unreadable clip
    patch = dataset.tokenizer.convert_tokens_to_ids("<ImageHere>")
    for i, sample in enumerate(samples[:2], 1):
        assert sample["image"].shape == (3, 112, 112)
        assert sample["input_ids"].tolist().count(patch) == 32
        assert trained_text(dataset.tokenizer, sample).strip() == f"picture number {i}"
    from video_llama.conversation import collate_video_samples

    batch = collate_video_samples(samples, pad_token_id=0)  # the unreadable one left out
    assert batch["image"].shape == (2, 3, 112, 112) and batch["unreadable"][0][0] == "image/3.jpg"  # one frame each


def test_llava_conversations_put_the_image_where_the_first_turn_says(tiny_llm_dir, clips_dir, image_data, tmp_path):
    dataset = build(recipe(tmp_path, tiny_llm_dir, clips_dir, image_data, {"llava_instruct": {}}), "llava_instruct")
    assert [r["video"] for r in dataset.records] == ["COCO_train2014_000000000001.jpg", "COCO_train2014_000000000002.jpg"]
    tokenizer = dataset.tokenizer
    for i in (0, 1):
        sample = dataset[i]
        text = tokenizer.decode(sample["input_ids"].tolist())
        assert sample["image"].shape == (3, 112, 112) and "<Image>" in text and "<Video>" not in text
        assert text.count("<ImageHere>") == 32 and "<image>" not in text
        where = text.index("<Image>") < text.index("What colour")  # "<image>\nQ" → before; "Q\n<image>" → after
        assert where == (i == 1)
        assert trained_text(tokenizer, sample).split() == ["colour", str(i + 1), "shape", str(i + 1)]


def test_own_images_in_the_guide_format_and_chinese_video_data(tiny_llm_dir, clips_dir, image_data, tmp_path):
    path = recipe(tmp_path, tiny_llm_dir, clips_dir, image_data, {"image_instruct": {}, "webvid_instruct_zh": {}})
    sample = build(path, "image_instruct")[0]
    assert sample["image"].shape == (3, 112, 112) and sample["question"] == "Which mode?"
    chinese = build(path, "webvid_instruct_zh")[0]
    assert chinese["image"].dim() == 4 and not chinese["question"].startswith("The video contains")  # no timestamps


@pytest.mark.slow
def test_images_and_videos_mix_by_sample_ratio_and_train(tiny_llm_dir, clips_dir, image_data, tmp_path):
    from video_llama.datasets.sampling import MixingBatchSampler

    ratios = [1, 1, 2]  # cc_sbu_align, llava_instruct, webvid_instruct
    sampler = MixingBatchSampler([2, 2, 4], ratios, batch_size=2, seed=0, iters_per_epoch=4000)
    counts = np.bincount([batch[0][0] for batch in sampler], minlength=3)
    shares = counts / counts.sum()
    assert np.allclose(shares, [0.25, 0.25, 0.5], atol=0.03)  # 4,000 batches: 3 standard deviations ≈ 0.02
    path = recipe(tmp_path, tiny_llm_dir, clips_dir, image_data,
                  {"cc_sbu_align": {"sample_ratio": 1}, "llava_instruct": {"sample_ratio": 1},
                   "webvid_instruct": {"sample_ratio": 2}},
                  iters_per_epoch=6, batch_size_train=2, num_workers=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "train.py", "--cfg-path", str(path)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stderr + result.stdout  # the mix is reported at start-up
    assert "training mix over 6 iterations per epoch: cc_sbu_align (3 samples, sample_ratio 1: 25% of batches)" in log
    assert "webvid_instruct (4 samples, sample_ratio 2: 50% of batches)" in log
    (run_dir,) = (tmp_path / "out").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6


def test_images_beside_a_motion_channels_video_model_are_refused_before_training(tiny_llm_dir, clips_dir, image_data, tmp_path):
    """One encoder cannot learn both colour images and frames of grey and frame-to-frame change."""
    from video_llama.common.config import Config, ConfigError

    path = recipe(tmp_path, tiny_llm_dir, clips_dir, image_data, {"image_instruct": {}, "webvid_instruct": {}})
    motion = ["datasets.webvid_instruct.vis_processor.train.motion_channels=True", "model.freeze_vit=False",
              "model.vit_precision=fp32"]
    with pytest.raises(ConfigError) as refused:
        Config.from_file(path, motion)
    message = str(refused.value)
    assert "datasets.webvid_instruct.vis_processor.train.motion_channels is True but datasets.image_instruct" in message
    assert "(blip2_image_" in message and "gives the same encoder colour frames" in message
    Config.from_file(path, ["model.freeze_vit=False", "model.vit_precision=fp32"])  # colour beside colour: fine


@pytest.mark.slow
def test_prepare_images_writes_the_guide_format_for_image_instruct(tiny_llm_dir, clips_dir, image_data, tmp_path):
    root = tmp_path / "stills"
    for label in ("wave", "wipe"):
        for i in range(5):
            write_image(root / label / f"{i}.jpg", hash((label, i)) % 1000)
    (root / "wipe" / "bad.png").write_bytes(b"no image")
    result = subprocess.run([sys.executable, "-m", "video_llama.cli.main", "prepare", "--images", "--root", str(root),
                             "--out", str(tmp_path / "anno")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "left out (cannot decode): wipe/bad.png" in result.stdout and "image_instruct" in result.stdout
    entries = [e for split in ("train", "val", "test") for e in json.loads((tmp_path / "anno" / f"{split}.json").read_text())]
    assert len(entries) == 10 and all(set(e) == {"image", "QA"} and "image" in e["QA"][0]["q"] for e in entries)
    path = recipe(tmp_path, tiny_llm_dir, clips_dir, image_data,
                  {"image_instruct": {"build_info": {"anno_dir": str(tmp_path / "anno"), "videos_dir": str(root)}}})
    dataset = build(path, "image_instruct")  # the train split of the prepare folder
    train = json.loads((tmp_path / "anno" / "train.json").read_text())
    assert len(dataset) == len(train) >= 4 and {dataset[i]["answer"] for i in range(len(train))} == {"Wave", "Wipe"}


@pytest.mark.parametrize("recipe_name, names", [
    ("original_stage1_pretrain.yaml", ["webvid", "cc_sbu", "laion"]),
    ("original_stage2_finetune.yaml", ["cc_sbu_align", "llava_instruct", "webvid_instruct"]),
])
def test_the_original_recipes_load_and_build_full_size_on_meta(recipe_name, names):
    import torch

    from video_llama.common.config import Config
    from video_llama.common.registry import registry

    cfg = Config.from_file(REPO_ROOT / "train_configs" / recipe_name,
                           ["run.device=cpu", "model.vit_ckpt=random", "model.q_former_model=random", "model.ckpt=null"])
    assert list(cfg.datasets_cfg) == names
    model_cfg = cfg.model_cfg
    model_cfg.llama_hidden_size = 4096  # the LLM itself is not loaded: its width is what the projection needs
    with torch.device("meta"):
        model = registry.get_model_class(model_cfg.arch).from_config(model_cfg, load_llm=False)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 22_104_064  # as the published 7B
    image_sizes = {cfg.datasets_cfg[n].vis_processor.train.image_size for n in names}
    assert model_cfg.img_size == 224 and image_sizes == {224}


def test_image_samples_are_scored_and_answered_as_trained(tiny_llm_dir, clips_dir, image_data, tmp_path):
    """The model's score/generate take (B, C, H, W) images and ask with <Image> tags, as training built them."""
    import torch

    from video_llama.common.config import Config
    from video_llama.common.registry import registry

    path = recipe(tmp_path, tiny_llm_dir, clips_dir, image_data, {"image_instruct": {}})
    cfg = Config.from_file(path, ["model.ckpt=random"])
    model = registry.get_model_class("video_llama").from_config(cfg.model_cfg).eval()
    sample = build(path, "image_instruct")[0]
    ids, _ = model.conversation(sample["question"], sample["answer"], image=True)
    assert ids == sample["input_ids"].tolist()  # the training sample is the prompt the model builds
    frames = sample["image"][None]
    with torch.no_grad():
        scores = model.score(frames, [sample["question"]], ["greet_mode", "clean_mode"])
        (answer,) = model.generate(frames, [sample["question"]], max_new_tokens=3)
    assert scores.shape == (1, 2) and torch.isfinite(scores).all() and isinstance(answer, str)
