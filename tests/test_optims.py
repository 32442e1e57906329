import logging

import pytest
import torch

from video_llama.common.optims import ConstantLRScheduler, LinearWarmupCosineLRScheduler, LinearWarmupStepLRScheduler


def optimizer():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.0)


def test_warmup_then_cosine_per_iteration():
    s = LinearWarmupCosineLRScheduler(optimizer(), max_epoch=2, iters_per_epoch=10, init_lr=1.0, min_lr=0.0,
                                      warmup_steps=4, warmup_start_lr=0.2)
    assert s.lr_at(0, 0) == pytest.approx(0.2) and s.lr_at(0, 2) == pytest.approx(0.6)
    assert s.lr_at(0, 4) == pytest.approx(1.0)
    assert s.lr_at(1, 2) == pytest.approx(0.5)  # halfway through the 16 post-warmup steps
    assert s.lr_at(1, 9) < s.lr_at(1, 8) < s.lr_at(1, 0)  # decays within an epoch, not per epoch


def test_warmup_longer_than_an_epoch_carries_on_and_longer_than_run_warns(caplog):
    s = ConstantLRScheduler(optimizer(), max_epoch=3, iters_per_epoch=10, init_lr=1.0, warmup_steps=15, warmup_start_lr=0.0)
    assert s.lr_at(1, 0) == pytest.approx(10 / 15) and s.lr_at(1, 5) == pytest.approx(1.0)
    with caplog.at_level(logging.WARNING):
        ConstantLRScheduler(optimizer(), max_epoch=1, iters_per_epoch=10, init_lr=1.0, warmup_steps=50)
    assert "never reach run.init_lr" in caplog.text


def test_step_lr_per_epoch_and_step_sets_groups():
    opt = optimizer()
    s = LinearWarmupStepLRScheduler(opt, max_epoch=3, iters_per_epoch=5, init_lr=1.0, min_lr=0.3, decay_rate=0.5)
    assert [s.lr_at(e, 3) for e in range(3)] == [1.0, 0.5, 0.3]
    s.step(1, 0)
    assert opt.param_groups[0]["lr"] == 0.5


def test_lr_scales_multiply_whole_modules_and_reject_unknown_names():
    from omegaconf import OmegaConf

    from video_llama.common.config import ConfigError
    from video_llama.runners.runner_base import build_optimizer, lr_scales_by_parameter

    model = torch.nn.ModuleDict({"llama_model": torch.nn.Linear(2, 2), "llama_proj": torch.nn.Linear(2, 2)})
    run_cfg = OmegaConf.create({"lr_scales": {"llama_model": 0.1}, "weight_decay": 0.05, "init_lr": 1.0, "beta2": 0.999})
    opt = build_optimizer(model, run_cfg)
    LinearWarmupCosineLRScheduler(opt, max_epoch=1, iters_per_epoch=10, init_lr=1.0).step(0, 0)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(model.llama_model.weight)] == pytest.approx(0.1) == lr_of[id(model.llama_model.bias)]
    assert lr_of[id(model.llama_proj.weight)] == pytest.approx(1.0)  # a shared prefix is not the same module
    assert decay_of[id(model.llama_model.weight)] == 0.05 and decay_of[id(model.llama_model.bias)] == 0.0

    with pytest.raises(ConfigError, match=r"run.lr_scales.llama_modle: .*\['llama_model', 'llama_proj'\]"):
        lr_scales_by_parameter(model, {"llama_modle": 0.1})
