"""Memory switches on the tiny model: LoRA (adapters only learn, merge keeps the outputs, saved and
loaded), LLM gradient checkpointing (same gradients), attention implementation."""

import pytest
import torch
from conftest import batch_of, build

LORA = ("lora.r=4", "lora.alpha=8", "lora.dropout=0.0")


def gradients(model, batch):
    model.train()
    model.zero_grad()
    model(batch)["loss"].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_with_lora_only_the_adapters_and_the_intended_parts_learn(tiny):
    cfg, dataset = tiny
    model = build(cfg, *LORA)
    llm_trainable = [n for n, p in model.llama_model.named_parameters() if p.requires_grad]
    assert llm_trainable and all("lora_" in n for n in llm_trainable)
    assert {n.split(".")[-4] for n in llm_trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    grads = gradients(model, batch_of(dataset))
    assert all(not n.startswith("llama_model.") or "lora_" in n for n in grads)
    assert any("lora_B" in n and g.abs().sum() > 0 for n, g in grads.items())  # the adapters do learn
    assert any(n.startswith("video_Qformer.") for n in grads) and not any(n.startswith("visual_encoder.") for n in grads)
    assert model.llama_model.training  # LoRA's dropout acts in train mode; the LLM has none of its own
    saved = model.checkpoint_state_dict()  # what a checkpoint holds: the adapters, never the LLM's own weights
    assert any("lora_" in n for n in saved) and not any(n.startswith("llama_model.") and "lora_" not in n for n in saved)


def test_merging_the_adapters_keeps_the_outputs(tiny):
    cfg, dataset = tiny
    model = build(cfg, *LORA).eval()
    with torch.no_grad():
        for name, param in model.llama_model.named_parameters():
            if "lora_B" in name:  # zero at the start: make the adapters do something
                param.normal_(std=0.05)
        batch = batch_of(dataset)
        before = model(batch)["logits"]
        merged = model.merge_lora()(batch)["logits"]
    assert not any("lora_" in n for n, _ in model.llama_model.named_parameters())
    assert torch.allclose(before, merged, atol=1e-5), (before - merged).abs().max()


def test_llm_gradient_checkpointing_gives_the_same_gradients(tiny):
    cfg, dataset = tiny
    batch = batch_of(dataset)
    plain = gradients(build(cfg, "freeze_llm=True"), batch)
    checkpointed_model = build(cfg, "freeze_llm=True", "llm_grad_checkpoint=True")
    assert checkpointed_model.llama_model.is_activation_checkpointing
    checkpointed = gradients(checkpointed_model, batch)
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_the_attention_implementation_reaches_the_llm(tiny, implementation):
    cfg, dataset = tiny
    model = build(cfg, f"attn_implementation={implementation}")
    assert model.llama_model.config._attn_implementation == implementation


@pytest.mark.slow
def test_a_lora_run_saves_its_adapters_reloads_and_merges_to_the_same_model(tiny, tiny_llm_dir, clips_dir, tmp_path):
    import subprocess
    import sys

    from safetensors.torch import load_file
    from test_train import env, options

    from conftest import REPO_ROOT, TINY_CONFIG
    from video_llama.models.video_llama import VideoLLAMA

    cmd = [sys.executable, "train.py", "--cfg-path", str(TINY_CONFIG), "--options",
           *options(tiny_llm_dir, clips_dir, tmp_path / "out", "run.iters_per_epoch=3", "model.lora.r=4")]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    saved = load_file(str(run_dir / "checkpoint_e1_s0" / "model.safetensors"))
    adapters = {n: t for n, t in saved.items() if "lora_" in n}
    assert adapters and all(n.startswith("llama_model.") for n in adapters)
    assert not any(n.startswith("llama_model.") and "lora_" not in n for n in saved)  # the LLM itself is not saved
    assert any("lora_B" in n and t.abs().sum() > 0 for n, t in adapters.items())  # they trained

    _, dataset = tiny
    batch = batch_of(dataset)
    torch.manual_seed(0)  # the tiny recipe's frozen ViT and Q-Former are random, not saved: the same draw twice
    loaded = VideoLLAMA.from_pretrained(run_dir).eval()
    assert all(torch.equal(loaded.state_dict()[n], t) for n, t in adapters.items())
    merge = subprocess.run([sys.executable, "-m", "video_llama.cli.main", "merge-lora", str(run_dir), "--out",
                            str(tmp_path / "merged")], cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert merge.returncode == 0, merge.stderr[-3000:]
    torch.manual_seed(0)
    merged = VideoLLAMA.from_pretrained(tmp_path / "merged").eval()
    assert not merged.uses_lora and not any("lora_" in n for n in merged.state_dict())
    with torch.no_grad():
        assert torch.allclose(loaded(batch)["logits"], merged(batch)["logits"], atol=1e-5)
    from video_llama.common.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"holds LoRA adapters \(rank 4\) and this model has none; set model.lora.r=4"):
        build(tiny[0], f"ckpt={run_dir}")


@pytest.mark.multiprocess
def test_fsdp_trains_like_ddp_and_its_checkpoints_load_plain_and_resume_under_ddp(tiny_llm_dir, clips_dir, tmp_path):
    """run.strategy=fsdp with 2 gloo processes (LoRA adapters on the sharded LLM): the same losses
    and weights as DDP; its checkpoint is a plain one (loads into a model built without FSDP) and
    a DDP run resumed from it ends where the uninterrupted run did."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from conftest import REPO_ROOT, TINY_CONFIG
    from video_llama.models.video_llama import VideoLLAMA

    def torchrun(strategy, out, *extra):
        cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", "--nproc_per_node=2",
               "train.py", "--cfg-path", str(TINY_CONFIG), "--options", f"model.llama_model={tiny_llm_dir}",
               f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
               f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
               f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}",
               "datasets.webvid_instruct.vis_processor.train.n_frms=4", "run.iters_per_epoch=2", "run.max_epoch=2",
               "run.batch_size_train=1", "run.distributed=True", "model.lora.r=4", f"run.strategy={strategy}",
               f"run.output_dir={out}", *extra]
        result = subprocess.run(cmd, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return next(Path(out).iterdir(), None) if Path(out).is_dir() else None  # a resumed run writes beside its checkpoint

    def losses(run_dir):
        return {(r["epoch"], r["step"]): r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                if "loss" in r}

    def final_weights(run_dir):
        return load_file(str(run_dir / "checkpoint_e2_s0" / "model.safetensors"))

    fsdp_run, ddp_run = torchrun("fsdp", tmp_path / "fsdp"), torchrun("ddp", tmp_path / "ddp")
    assert list(losses(fsdp_run).values()) == pytest.approx(list(losses(ddp_run).values()), abs=1e-6)
    fsdp_weights, ddp_weights = final_weights(fsdp_run), final_weights(ddp_run)
    assert any("lora_" in n for n in fsdp_weights) and fsdp_weights.keys() == ddp_weights.keys()
    assert all(torch.allclose(fsdp_weights[n], ddp_weights[n], atol=1e-6) for n in ddp_weights)
    fingerprints = json.loads((fsdp_run / "summary.json").read_text())["rank_weight_fingerprints"]
    assert fingerprints[0] == fingerprints[1]  # whole parameters gathered alike on both ranks

    plain = VideoLLAMA.from_pretrained(fsdp_run / "checkpoint_e2_s0").checkpoint_state_dict()
    assert all(torch.equal(plain[n], fsdp_weights[n]) for n in fsdp_weights)

    resumed = tmp_path / "resumed" / fsdp_run.name  # a copy: the resumed run writes into its folder
    shutil.copytree(fsdp_run, resumed)
    torchrun("ddp", tmp_path / "unused", f"run.resume_ckpt_path={resumed / 'checkpoint_e1_s0'}")
    assert all(torch.allclose(final_weights(resumed)[n], ddp_weights[n], atol=1e-6) for n in ddp_weights)
