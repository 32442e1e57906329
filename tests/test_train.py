"""train.py end to end on the tiny recipe: one process, two processes, stop/resume, atomic saves."""

import json
import math
from pathlib import Path
import os
import subprocess
import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from video_llama.common import checkpointing
from video_llama.common.jobs import train as train_main
from video_llama.runners.runner_base import RunnerBase

from conftest import REPO_ROOT, TINY_CONFIG


def options(llm, clips, out, *extra):
    return [
        f"model.llama_model={llm}", f"datasets.webvid_instruct.tokenizer_name={llm}",
        f"datasets.webvid_instruct.build_info.anno_dir={clips / 'train.json'}",
        f"datasets.webvid_instruct.build_info.videos_dir={clips}",
        "datasets.webvid_instruct.vis_processor.train.n_frms=4", f"run.output_dir={out}", *extra,
    ]


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_train_script_one_process_writes_checkpoint(tiny_llm_dir, clips_dir, tmp_path):
    splits = json.dumps({"train": str(clips_dir / "train.json"), "val": str(clips_dir / "train.json")})
    cmd = [sys.executable, "train.py", "--cfg-path", str(TINY_CONFIG), "--options",
           *options(tiny_llm_dir, clips_dir, tmp_path / "out", "run.iters_per_epoch=3", "run.valid_splits=[val]"),
           f"datasets.webvid_instruct.build_info.anno_dir={splits}"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and len(losses(run_dir)) == 3
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert len(evals) == 1 and evals[0]["val_loss"] > 0
    weights = load_file(str(run_dir / "checkpoint_e1_s0" / "model.safetensors"))
    assert set(k.split(".")[0] for k in weights) == {"video_frame_position_embedding", "video_Qformer",
                                                       "video_query_tokens", "llama_proj"}
    assert (run_dir / "config.yaml").is_file() and (run_dir / "latest").read_text().strip() == "checkpoint_e1_s0"
    assert "effective batch 2 = 2 per process × 1 processes × 1 accumulation" in result.stdout


def test_torchrun_two_processes_stay_in_sync(tiny_llm_dir, clips_dir, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "train.py", "--cfg-path", str(TINY_CONFIG), "--options",
           *options(tiny_llm_dir, clips_dir, tmp_path, "run.iters_per_epoch=3", "run.distributed=True",
                    "run.world_size=4", "run.batch_size_train=1")]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "run.world_size is 4 but torchrun started 2 process(es); the launcher wins" in result.stdout + result.stderr
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    first, second = summary["rank_weight_fingerprints"]
    assert first == second  # identical parameters on both ranks after training
    videos = summary["rank_first_batch_videos"]
    assert videos[0] != videos[1]  # ranks read different samples


class StopAfter(Exception):
    pass


def test_stopped_and_resumed_run_matches_uninterrupted(tiny_llm_dir, clips_dir, tmp_path, monkeypatch):
    common = ["run.max_epoch=2", "run.iters_per_epoch=4", "run.save_freq_iters=2", "run.num_workers=2",
              "run.batch_size_train=2", "run.warmup_steps=2"]  # train augmentation: headtail + random crop
    full_dir, stop_dir, resume_dir = tmp_path / "full", tmp_path / "stop", tmp_path / "resume"
    train_main(["--cfg-path", str(TINY_CONFIG), "--options", *options(tiny_llm_dir, clips_dir, full_dir, *common)])

    original = RunnerBase.train_iteration
    calls = types.SimpleNamespace(n=0)

    def stop_in_epoch_two(self, *args, **kwargs):
        calls.n += 1
        if calls.n == 8:  # iteration 3 of epoch 1; the last checkpoint is at epoch 1, step 2
            raise StopAfter
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunnerBase, "train_iteration", stop_in_epoch_two)
    with pytest.raises(StopAfter):
        train_main(["--cfg-path", str(TINY_CONFIG), "--options", *options(tiny_llm_dir, clips_dir, stop_dir, *common)])
    monkeypatch.setattr(RunnerBase, "train_iteration", original)
    (stopped_run,) = stop_dir.iterdir()
    assert (stopped_run / "latest").read_text().strip() == "checkpoint_e1_s2"

    train_main(["--cfg-path", str(TINY_CONFIG), "--options",
                *options(tiny_llm_dir, clips_dir, resume_dir, *common, f"run.resume_ckpt_path={stopped_run}")])
    (full_run,), (resumed_run,) = full_dir.iterdir(), resume_dir.iterdir()
    full_losses, resumed_losses = losses(full_run), losses(resumed_run)
    assert len(full_losses) == 8 and len(resumed_losses) == 2
    assert resumed_losses == pytest.approx(full_losses[6:], abs=1e-6)
    full_weights = load_file(str(full_run / "checkpoint_e2_s0" / "model.safetensors"))
    resumed_weights = load_file(str(resumed_run / "checkpoint_e2_s0" / "model.safetensors"))
    assert all(torch.allclose(full_weights[k], resumed_weights[k], atol=1e-6) for k in full_weights)


def test_checkpoint_killed_mid_write_leaves_previous_intact(tmp_path, monkeypatch):
    weights = {"w": torch.ones(3)}
    first = checkpointing.save_checkpoint(tmp_path, "checkpoint_e1_s0", weights, {"epoch": 1, "step": 0}, "run: {}\n")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while the state file is being written

    monkeypatch.setattr(checkpointing.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpointing.save_checkpoint(tmp_path, "checkpoint_e2_s0", {"w": torch.zeros(3)}, {"epoch": 2, "step": 0}, "run: {}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_e1_s0", "latest"]
    loaded, state, _, folder = checkpointing.load_checkpoint(tmp_path)
    assert folder == first and state["epoch"] == 1 and torch.equal(loaded["w"], weights["w"])


def test_gradient_accumulation_scales_loss_to_the_window_mean():
    """Two batches of one with accum_grad_iters=2 give the update of one batch of two."""
    torch.manual_seed(0)
    data = torch.randn(2, 3), torch.randn(2, 1)

    def make():
        torch.manual_seed(1)
        return torch.nn.Linear(3, 1)

    class Task:
        def train_step(self, model, batch):
            return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])

    def runner(model, accum, iters_per_epoch):
        r = RunnerBase.__new__(RunnerBase)
        r.run_cfg = types.SimpleNamespace(accum_grad_iters=accum, max_grad_norm=None)
        r.task, r.model, r.device = Task(), model, torch.device("cpu")
        return r

    scaler = torch.amp.GradScaler("cpu", enabled=False)
    no_autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731

    one = make()
    opt = torch.optim.SGD(one.parameters(), lr=0.1)
    runner(one, 1, 1).train_iteration(one, {"x": data[0], "y": data[1]}, 0, 1, opt, scaler, no_autocast)

    two = make()
    opt = torch.optim.SGD(two.parameters(), lr=0.1)
    r = runner(two, 2, 2)
    for step in range(2):
        r.train_iteration(two, {"x": data[0][step:step + 1], "y": data[1][step:step + 1]}, step, 2, opt, scaler, no_autocast)
    assert torch.allclose(one.weight, two.weight, atol=1e-6) and torch.allclose(one.bias, two.bias, atol=1e-6)
    assert [r._window(s, 3) for s in range(3)] == [(2, False), (2, True), (1, True)]  # epoch ends mid-window


def test_action_recognition_train_validate_keep_best_then_evaluate(tiny_llm_dir, clips_dir, tmp_path):
    from video_llama.common.jobs import evaluate

    splits = json.dumps({"train": str(clips_dir / "train.json"), "val": str(clips_dir / "train.json")})
    summary = train_main(["--cfg-path", str(TINY_CONFIG), "--options",
                          *options(tiny_llm_dir, clips_dir, tmp_path / "train", "run.iters_per_epoch=2", "run.max_epoch=2",
                                   "run.task=action_recognition", "run.valid_splits=[val]"),
                          f"datasets.webvid_instruct.build_info.anno_dir={splits}"])
    run_dir = Path(summary["run_dir"])
    best = (run_dir / "best").read_text().splitlines()
    assert best[0] == summary["best_checkpoint"] and "val_top1" in best[1]
    assert (run_dir / "eval_epoch0" / "webvid_instruct_val" / "confusion_matrix.png").is_file()

    for mode in ("rank", "generate"):
        result = evaluate(["--cfg-path", str(TINY_CONFIG), "--options",
                           *options(tiny_llm_dir, clips_dir, tmp_path / f"eval_{mode}", "run.task=action_recognition",
                                    "run.test_splits=[test]", f"run.eval_mode={mode}", f"model.ckpt={run_dir}"),
                           f"datasets.webvid_instruct.build_info.anno_dir={{test: {clips_dir / 'train.json'}}}"])
        out = Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test"
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n"] == 4 and set(metrics["per_class"]) == {"clean_mode", "greet_mode"}
        assert result["test_top1"] == metrics["top1"] and 0.0 <= metrics["top1"] <= 1.0
        predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert len(predictions) == 4 and all(("answer" in p) == (mode == "generate") for p in predictions)
        assert (out / "confusion_matrix.png").is_file() and (out / "confusion_matrix.json").is_file()


def test_guide_yaml_trains_with_tiny_sizes_and_local_paths(tiny_llm_dir, clips_dir, tmp_path, caplog):
    """The guide's experiment as written, only sizes and paths changed through --options; its
    `amp: True` runs as bf16 autocast on CPU, and its world_size 4 / warmup 1000 are reported."""
    import logging

    from conftest import DATA_DIR

    guide = DATA_DIR / "guide_visionbranch_stage2_finetune.yaml"
    with caplog.at_level(logging.WARNING):
        summary = train_main(["--cfg-path", str(guide), "--options", "model.model_type=tiny", "model.ckpt=null",
                              f"model.llama_model={tiny_llm_dir}", f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
                              f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
                              f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}",
                              "run.device=cpu", "run.iters_per_epoch=2", "run.max_epoch=1", "run.num_workers=2",
                              f"run.output_dir={tmp_path}"])
    assert summary["steps"] == 2 and Path(summary["checkpoint"]).is_dir()
    assert math.isfinite(summary["final_loss"])
    assert "bf16 autocast" in caplog.text and "never reach run.init_lr" in caplog.text
    assert "run.world_size is 4" in caplog.text
