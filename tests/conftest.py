"""Shared fixtures: tiny LLMs and synthetic clips are made once per test session."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    from video_llama.cli.tiny_llm import write_tiny_llm

    return write_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))
