"""The audio-language branch's own part: the published AL checkpoints' names and shapes, at full
size on the meta device, and a forward pass at tiny size."""

import json

import pytest
import torch

import video_llama  # noqa: F401
from video_llama.common.registry import registry

from conftest import DATA_DIR


@pytest.mark.parametrize("reference, llm_width", [("AL_7B", 4096), ("AL_13B", 5120)])
def test_full_size_matches_the_published_audio_checkpoints(reference, llm_width):
    from video_llama.models.audio_branch import AudioBranch
    from video_llama.models.checkpoint import original_to_ours, ours_to_original

    cfg = registry.get_model_class("video_llama").default_config("pretrain_llama_v2")
    with torch.device("meta"):
        branch = AudioBranch(cfg, llm_width)
    ours = {name: tuple(p.shape) for name, p in branch.named_parameters()}
    published = json.loads((DATA_DIR / "original_checkpoint_keys.json").read_text())[reference]
    mapped = {original_to_ours(n): tuple(s) for n, s in published.items() if original_to_ours(n)}
    assert ours == mapped  # every AL name, with its shape, and nothing else
    assert all(ours_to_original(name) in published for name in ours)  # and back to the original's names
    assert ours["audio_Qformer.encoder.layer.0.crossattention.attention.key.weight"] == (768, 1024)


def test_imagebind_embeddings_become_llm_tokens(tiny):
    from video_llama.models.audio_branch import AudioBranch

    cfg, _ = tiny
    torch.manual_seed(0)
    branch = AudioBranch(cfg.model_cfg, llm_width=64, embed_width=32)
    tokens = branch(torch.randn(2, 3, 32))  # three 2-second clips per video
    assert tokens.shape == (2, 8, 64)
    tokens.sum().backward()
    assert all(p.grad is not None for p in branch.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="9 audio clips exceed the 8"):
        branch(torch.randn(1, 9, 32))
