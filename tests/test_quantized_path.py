"""The 8/4-bit LLM path, without a GPU: a bitsandbytes-quantised LLM is placed while it loads
(``device_map``) and never moved afterwards; the runner and the demo move only the rest, and a
move of the LLM anyway is a UserError naming the setting, not a failure inside bitsandbytes."""

import pytest
import torch
import torch.nn as nn

from video_llama.common.errors import UserError
from video_llama.models.video_llama import move_to_device

from conftest import TINY_CONFIG, build, tiny_config


class StandInLLM(nn.Module):
    """What a quantised LLM is to the code around it: flagged, on its own device (meta here, so
    that it differs from where the rest starts), and broken by any move or cast."""

    is_quantized = True

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 4, device="meta")

    def to(self, *args, **kwargs):
        raise AssertionError("the quantised LLM was moved with .to")

    def _apply(self, *args, **kwargs):  # what a holder's .to / .cuda / .half reach
        raise AssertionError("the quantised LLM was moved or cast")


def test_move_to_device_moves_everything_but_the_quantised_llm():
    llm = StandInLLM()
    model = nn.ModuleDict({"vision": nn.Linear(2, 2), "wrapper": nn.ModuleDict({"llm": llm, "proj": nn.Linear(2, 2)})})
    with pytest.raises(AssertionError):
        model.to("meta")  # what the runner and the demo did before
    assert move_to_device(model, "meta") is model
    assert model["vision"].weight.device.type == "meta" and model["wrapper"]["proj"].weight.device.type == "meta"
    assert model["wrapper"]["llm"] is llm  # back in its place, untouched
    with pytest.raises(UserError, match=r"model\.llm_load_in_8bit: the quantised LLM was loaded onto meta, but the "
                                        r"model is to run on cpu"):
        move_to_device(model, "cpu")


@pytest.fixture
def quantised_loads(monkeypatch):
    """``from_pretrained`` records its arguments and returns the tiny LLM flagged as bitsandbytes
    leaves a quantised one (loaded in full precision: bitsandbytes needs a GPU)."""
    from transformers import AutoModelForCausalLM

    calls = []
    load = AutoModelForCausalLM.from_pretrained

    def from_pretrained(path, **kwargs):
        calls.append(kwargs)
        llm = load(path, **{k: v for k, v in kwargs.items() if k not in ("quantization_config", "device_map")})
        llm.is_quantized = True
        llm.config.quantization_config = kwargs["quantization_config"]
        return llm

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # the GPU train.py / the demo selected
    return calls


@pytest.mark.parametrize("setting", ["llm_load_in_8bit", "llm_load_in_4bit"])
def test_the_quantised_llm_is_placed_at_load_and_the_runner_never_moves_it(tiny_llm_dir, clips_dir, quantised_loads,
                                                                           setting):
    from video_llama.runners.runner_base import RunnerBase

    cfg = tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir)
    model = build(cfg, f"{setting}=True")
    (kwargs,) = quantised_loads
    assert kwargs["device_map"] == {"": 0}
    assert getattr(kwargs["quantization_config"], f"load_in_{setting[-4:]}") is True
    runner = RunnerBase(cfg=cfg, task=None, model=model, datasets={})  # moves the model to run.device
    assert runner.model is model and model.device.type == "cpu"
    for move in (lambda: model.to("cpu"), lambda: model.float(), lambda: model.llama_model.to("cpu")):
        with pytest.raises(UserError, match=rf"model\.{setting}: the LLM was quantised by bitsandbytes onto cpu as it "
                                            rf"loaded and cannot be moved.*move_to_device.*model\.{setting}=False"):
            move()


def test_the_demo_builds_a_quantised_model_without_moving_the_llm(tiny_llm_dir, clips_dir, quantised_loads,
                                                                  monkeypatch):
    from video_llama.jobs.chat import load_setup

    monkeypatch.setattr("video_llama.jobs.chat.check_runtime", lambda config: None)  # it asks for a GPU
    data = "datasets.webvid_instruct"
    setup = load_setup(TINY_CONFIG, [f"model.llama_model={tiny_llm_dir}", f"{data}.tokenizer_name={tiny_llm_dir}",
                                     "model.ckpt=random", "model.llm_load_in_8bit=True",
                                     f"{data}.build_info.anno_dir={clips_dir / 'train.json'}",
                                     f"{data}.build_info.videos_dir={clips_dir}"])
    assert quantised_loads[0]["device_map"] == {"": 0} and setup.model.llama_model.is_quantized
    assert not setup.model.training  # moved (the rest) and put in eval mode
