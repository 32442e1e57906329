import logging
import types

import torch

from video_llama.common import dist_utils


def run_cfg(**kw):
    return types.SimpleNamespace(**{"world_size": 1, "device": "cpu", "distributed": True, "dist_url": "env://",
                                     "cpu_threads": None, "num_workers": 0, **kw})


def test_single_process_needs_no_process_group(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    info = dist_utils.init_distributed_mode(run_cfg())
    assert (info.rank, info.world_size, info.device) == (0, 1, "cpu") and not dist_utils.is_dist()
    assert dist_utils.all_gather_object("x") == ["x"] and dist_utils.all_reduce_mean(2.5) == 2.5
    dist_utils.barrier()  # a no-op without a process group


def test_torchrun_env_wins_over_slurm(monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")  # under `srun torchrun` this is the node index
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert dist_utils._launcher_env() == (3, 1, 4, "torchrun")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert dist_utils._launcher_env() == (1, 0, 2, "srun")


def test_yaml_world_size_disagreeing_is_a_warning(monkeypatch, caplog):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    with caplog.at_level(logging.WARNING):
        info = dist_utils.init_distributed_mode(run_cfg(world_size=4))
    assert (info.rank, info.world_size) == (0, 1)  # one process was launched: that is what runs
    assert "run.world_size is 4" in caplog.text and "the launcher wins" in caplog.text


def test_cpu_amp_says_what_it_does(caplog):
    from video_llama.runners.runner_base import RunnerBase

    runner = RunnerBase.__new__(RunnerBase)
    runner.device = torch.device("cpu")
    for dtype, expected, enabled in (("fp16", "training in fp32", False), ("bf16", "bf16 autocast", True)):
        runner.run_cfg = types.SimpleNamespace(amp=True, amp_dtype=dtype)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            autocast, scaler = runner._precision()
        assert expected in caplog.text
        with autocast():
            out = torch.nn.functional.linear(torch.ones(1, 2), torch.ones(2, 2))
        assert (out.dtype == torch.bfloat16) == enabled and not scaler.is_enabled()


def test_cpu_threads_leave_cores_to_the_data_loader_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(dist_utils.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert dist_utils.cpu_threads(run_cfg(num_workers=4)) == 12
    assert dist_utils.cpu_threads(run_cfg(num_workers=2)) == 14
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four torchrun processes share the 16 cores
    assert dist_utils.cpu_threads(run_cfg(num_workers=2)) == 2
    assert dist_utils.cpu_threads(run_cfg(num_workers=8)) == 1  # never below one
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert dist_utils.cpu_threads(run_cfg(num_workers=2)) == 3
    assert dist_utils.cpu_threads(run_cfg(num_workers=2, cpu_threads=5)) == 5
