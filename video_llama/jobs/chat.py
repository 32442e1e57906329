"""A trained model ready to talk to: the model, its processors and prompt settings, built from an
evaluation config or a run folder, as ``demo.py``, ``infer`` and ``select-mode`` use it."""

from dataclasses import dataclass

import torch

from video_llama.common.config import Config, check_runtime
from video_llama.common.registry import registry
from video_llama.common.utils import seed_everything
from video_llama.conversation.chat import Chat
from video_llama.jobs.experiment import check_evaluable
from video_llama.models.video_llama import move_to_device
from video_llama.processors.audio import SoundProcessor
from video_llama.processors.image_processors import load_image


@dataclass
class ChatSetup:
    """What every conversation shares: the model, the processors and the prompt settings."""

    model: object
    vis_processor: object
    image_processor: object
    timestamps: bool
    config: object = None  # the resolved Config it was built from
    prompt_style: str = "training"  # Chat's: as the model was trained, or as the original demo asked
    sound_processor: object = None  # a model with the audio branch hears the clips

    def new_chat(self, **state):
        return Chat(self.model, self.vis_processor, self.image_processor, self.timestamps,
                    prompt_style=self.prompt_style, sound_processor=self.sound_processor, **state)


def visual_settings(cfg):
    """(video processor config, timestamps) of the config's first dataset with a vis_processor."""
    for dataset_cfg in cfg.datasets_cfg.values():
        procs = dataset_cfg.get("vis_processor") or {}
        proc_cfg = procs.get("eval") or procs.get("train")
        if proc_cfg is not None:
            return proc_cfg, bool(dataset_cfg.get("timestamps", True))
    raise ValueError("the config's datasets name no vis_processor; the demo reads the first one's (eval or train)")


def load_setup(cfg_path, options=(), device=None, plugins=()):
    """The model of ``cfg_path`` (with ``options``) on ``device`` (None: the config's run.device),
    ready to chat."""
    cfg = Config.from_file(cfg_path, [*options, *([f"run.device={device}"] if device else [])], list(plugins),
                           trained_model=True)
    check_evaluable(cfg.model_cfg)
    check_runtime(cfg.config)
    seed_everything(cfg.run_cfg.get("seed", 42))  # as the original demo: sampled answers repeat per session
    proc_cfg, timestamps = visual_settings(cfg)
    vis_processor = registry.get_processor_class(proc_cfg.name).from_config(proc_cfg)
    image_cfg = {"name": "blip2_image_eval", "image_size": proc_cfg.image_size}
    image_transform = registry.get_processor_class("blip2_image_eval").from_config(image_cfg)
    run_device = torch.device(cfg.run_cfg.get("device") or "cpu")
    if run_device.type == "cuda" and run_device.index is not None:
        torch.cuda.set_device(run_device)  # a quantised LLM loads onto the current GPU and cannot move later
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg)
    move_to_device(model, run_device).eval()
    sound_processor = SoundProcessor() if getattr(model, "has_audio_branch", False) else None
    return ChatSetup(model, vis_processor, lambda path: image_transform(load_image(path)), timestamps, cfg,
                     sound_processor=sound_processor)
