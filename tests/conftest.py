"""Shared fixtures: tiny LLMs, synthetic clips and tiny configs are made once per test session."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / "data"
TINY_CONFIG = REPO_ROOT / "train_configs" / "tiny_cpu_finetune.yaml"
# --plugins this and run.task=batch_logged_video_text_pretrain: each rank logs its batches' videos
# into $BATCH_LOG_DIR, which trained_videos reads back
BATCH_LOG_PLUGIN = REPO_ROOT / "tests" / "plugins" / "batch_log.py"


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    from video_llama.data_tools.tiny_llm import write_tiny_llm

    return write_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


def gradient_clip(num_frames, height=48, width=64, seed=0):
    """Frames whose brightness encodes the frame index (so sampled indices can be read back)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t] = int(255 * t / max(1, num_frames - 1))
    frames[..., 2] = rng.integers(0, 255, size=(height, width), dtype=np.uint8)  # texture, not index
    return frames


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory):
    """A folder with ordinary clips, a short clip, a broken file, and an instruction JSON."""
    from video_llama.data_tools.video_writer import write_video

    root = tmp_path_factory.mktemp("clips")
    for i in range(4):
        write_video(root / f"clip{i}.mp4", gradient_clip(24, seed=i))
    write_video(root / "short.avi", gradient_clip(3))
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    qa = lambda a: [{"q": "What is the action shown in the displayed video?", "a": a}]  # noqa: E731
    entries = [{"video": f"clip{i}.mp4", "QA": qa(["greet_mode", "clean_mode"][i % 2])} for i in range(4)]
    (root / "train.json").write_text(json.dumps(entries))
    return root


def benchmark(name):
    """The module ``benchmarks/<name>.py`` (the benchmarks are scripts, not a package), for tests
    that check what a benchmark measures with or against."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(llm_dir, anno, videos_dir, *options):
    """The shipped tiny CPU recipe pointed at test files."""
    from video_llama.common.config import Config

    return Config.from_file(TINY_CONFIG, [
        f"model.llama_model={llm_dir}",
        f"datasets.webvid_instruct.tokenizer_name={llm_dir}",
        f"datasets.webvid_instruct.build_info.anno_dir={anno}",
        f"datasets.webvid_instruct.build_info.videos_dir={videos_dir}",
        *options,
    ])


@pytest.fixture(scope="module")
def tiny(tiny_llm_dir, clips_dir):
    """(config, train dataset) of the tiny recipe on the test clips (4 frames)."""
    from video_llama.common.registry import registry

    cfg = tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir, "datasets.webvid_instruct.vis_processor.train.n_frms=4")
    datasets = registry.get_builder_class("webvid_instruct")(cfg.datasets_cfg.webvid_instruct).build_datasets()
    return cfg, datasets["train"]


def build(cfg, *options):
    """The tiny model of ``cfg`` with ``model:`` overrides (key=value), seeded."""
    import torch
    from omegaconf import OmegaConf

    from video_llama.common.registry import registry

    model_cfg = OmegaConf.merge(cfg.model_cfg, OmegaConf.from_dotlist(list(options)))
    torch.manual_seed(0)
    return registry.get_model_class("video_llama").from_config(model_cfg)


def batch_of(dataset):
    from video_llama.conversation.collate import collate_video_samples

    return collate_video_samples([dataset[0], dataset[1]], dataset.tokenizer.pad_token_id)


def trained_videos(folder):
    """{rank: [the videos of each training batch]} that BATCH_LOG_PLUGIN's task wrote into ``folder``."""
    return {int(path.stem[4:]): [json.loads(line) for line in path.read_text().splitlines()]
            for path in sorted(Path(folder).glob("rank*.jsonl"))}
