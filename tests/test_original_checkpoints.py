"""Checkpoints written by the original Video-LLaMA training runner (``checkpoint_N.pth``): the state
under ``model``, with the buffers the original registered beside the trained weights, and the
optimizer, config, scaler and epoch around it. A model finetuned by the original code is used as
``model.ckpt`` to chat with, to evaluate and to train further; derived buffers are ignored by name,
anything that would change the model is refused."""

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from video_llama.common.errors import CheckpointError
from video_llama.models.checkpoint import to_original

from conftest import TINY_CONFIG, build, tiny_config

REFERENCE = json.loads((Path(__file__).resolve().parent / "data" / "original_checkpoint_keys.json").read_text())
DERIVED = ("llama_model.model.layers.*.self_attn.rotary_emb.inv_freq ×2", "Qformer.bert.embeddings.position_ids",
           "video_Qformer.bert.embeddings.position_ids")


def original_runner_checkpoint(model, path, epoch=2, changes=None):
    """What the original runner's ``_save_checkpoint`` writes for ``model`` after a finetune: its
    state dict minus the frozen *parameters* (buffers stay), in the original names, beside an
    optimizer state, the config as a plain dict, the scaler and the epoch. ``changes``: entries
    to replace or add (original names), to make a bad file."""
    trainable = {n: t.detach().clone() for n, t in model.checkpoint_state_dict().items()}
    state = to_original(trainable)
    config = model.llama_model.config
    head = config.hidden_size // config.num_attention_heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head, 2).float() / head))
    for i in range(config.num_hidden_layers):  # the LLaMA of the original registered one per layer
        state[f"llama_model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq
    state["Qformer.bert.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    state.update(changes or {})
    params = [torch.nn.Parameter(t.clone()) for t in trainable.values()]
    optimizer = torch.optim.AdamW(params, lr=3e-5, weight_decay=0.05)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    torch.save({
        "model": state,
        "optimizer": optimizer.state_dict(),
        "config": {"model": {"arch": "video_llama", "model_type": "pretrain_llama_v2", "low_resource": False,
                             "llama_model": "ckpt/llama-2-7b-chat-hf", "ckpt": "ckpt/VL_LLaMA_2_7B_Pretrained.pth"},
                   "run": {"task": "video_text_pretrain", "init_lr": 3e-5, "max_epoch": 3, "amp": True},
                   "datasets": {"webvid_instruct": {"num_video_query_token": 32}}},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                   "_growth_tracker": 0},
        "epoch": epoch,
    }, path)
    return path


@pytest.fixture(scope="module")
def finetuned(tiny_llm_dir, clips_dir, tmp_path_factory):
    """(config, the finetuned trainable weights in our names, the original runner's checkpoint of them)."""
    cfg = tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir)
    model = build(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # unlike any fresh build (they are all seeded alike)
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=gen))
    path = original_runner_checkpoint(model, tmp_path_factory.mktemp("original_run") / "checkpoint_2.pth")
    return cfg, model.checkpoint_state_dict(), path


def test_the_checkpoint_written_here_has_the_original_names(finetuned):
    _, _, path = finetuned
    saved = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "config", "scaler", "epoch"} <= set(saved)
    weights = {n for n in saved["model"] if "inv_freq" not in n and not n.startswith("Qformer.")}
    assert weights == set(REFERENCE["VL_7B"])  # names as published, at the tiny sizes


def test_chat_loads_the_original_runner_checkpoint_and_names_the_ignored_buffers(finetuned, tiny_llm_dir, clips_dir,
                                                                                 caplog):
    from video_llama.jobs.chat import load_setup

    _, weights, path = finetuned
    with caplog.at_level(logging.INFO):
        setup = load_setup(TINY_CONFIG, options(tiny_llm_dir, clips_dir, f"model.ckpt={path}"))
    state = setup.model.state_dict()
    assert all(torch.equal(state[n], t) for n, t in weights.items())
    assert "is a training checkpoint (epoch 2)" in caplog.text
    assert all(name in caplog.text for name in DERIVED), caplog.text


@pytest.mark.parametrize("change, message", [
    ({"llama_proj.weight": torch.zeros(99, 64)},
     r"does not fit this model's sizes:\n  llama_proj.weight: file \(99, 64\)"),
    ({"video_Qformer.bert.encoder.layer.2.attention.self.query.weight": torch.zeros(64, 64)},
     r"holds 1 weight\(s\) this model does not have.*video_Qformer.encoder.layer.2.attention.attention.query.weight"),
    ({"llama_model.model.layers.5.mlp.up_proj.weight": torch.zeros(4, 4)},
     r"holds 1 weight\(s\) this model does not have.*llama_model.model.layers.5.mlp.up_proj.weight"),
])
def test_a_wrong_shaped_or_unknown_weight_is_still_refused(finetuned, tmp_path, change, message):
    cfg, _, _ = finetuned
    source = build(cfg)
    path = original_runner_checkpoint(source, tmp_path / "checkpoint_3.pth", changes=change)
    with pytest.raises(CheckpointError, match=message) as err:
        build(cfg, f"ckpt={path}")
    assert str(err.value).startswith(f"model.ckpt: {path}")


def options(llm, clips, *extra):
    return [f"model.llama_model={llm}", f"datasets.webvid_instruct.tokenizer_name={llm}",
            f"datasets.webvid_instruct.build_info.anno_dir={clips / 'train.json'}",
            f"datasets.webvid_instruct.build_info.videos_dir={clips}",
            "datasets.webvid_instruct.vis_processor.train.n_frms=4", *extra]


def test_evaluate_scores_the_original_runner_checkpoint(finetuned, tiny_llm_dir, clips_dir, tmp_path, caplog):
    from video_llama.jobs.experiment import evaluate

    _, _, path = finetuned
    with caplog.at_level(logging.INFO):
        result = evaluate(["--cfg-path", str(TINY_CONFIG), "--options",
                           *options(tiny_llm_dir, clips_dir, f"model.ckpt={path}", f"run.output_dir={tmp_path}",
                                    "run.task=action_recognition", "run.test_splits=[test]", "run.eval_mode=rank"),
                           f"datasets.webvid_instruct.build_info.anno_dir={{test: {clips_dir / 'train.json'}}}"])
    metrics = json.loads((Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test" / "metrics.json").read_text())
    assert metrics["n"] == 4 and result["model_ckpt"] == str(path)
    assert f"model.ckpt={path}: loaded" in caplog.text


def test_training_starts_from_the_original_runner_checkpoint(finetuned, tiny_llm_dir, clips_dir, tmp_path):
    """A learning rate of 0 leaves the weights as they started: the saved checkpoint holds the
    original run's weights, so training began from them (not from a fresh initialisation)."""
    from video_llama.jobs.experiment import train

    _, weights, path = finetuned
    summary = train(["--cfg-path", str(TINY_CONFIG), "--options",
                     *options(tiny_llm_dir, clips_dir, f"model.ckpt={path}", f"run.output_dir={tmp_path}",
                              "run.iters_per_epoch=1", "run.max_epoch=1", "run.init_lr=0", "run.min_lr=0",
                              "run.warmup_lr=0")])
    saved = load_file(str(Path(summary["run_dir"]) / "checkpoint_e1_s0" / "model.safetensors"))
    assert set(saved) == set(weights) and all(torch.equal(saved[n], t) for n, t in weights.items())
