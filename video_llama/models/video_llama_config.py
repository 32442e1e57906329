"""What the ``model:`` section of a ``video_llama`` experiment means beyond its defaults
(``configs/models/video_llama/base.yaml``, the schema): the original's keys it accepts, the keys
it derives, the files it names, and the settings that contradict each other. The config loader
(``common/config.py``) asks the registered model class for these and knows no model key itself.
"""

import logging
from pathlib import Path

from video_llama.common.config import ANY, LegacyKey
from video_llama.common.registry import registry
from video_llama.conversation.templates import template_in_config
from video_llama.models.audio_branch import MAX_AUDIO_CLIPS, frame_branches, visual_token_count

logger = logging.getLogger(__name__)

# Keys of the original Video-LLaMA configs that this version accepts without acting on them. They
# are not in the schema: each is accepted only with a value that means what this version does
# anyway, and is dropped from the resolved config.
LEGACY_KEYS = {
    "fusion_header_type": LegacyKey(ANY, "the original ignores it too"),
    "fusion_head_layers": LegacyKey(ANY, "the original ignores it too"),
    "low_resource": LegacyKey(False, "the original's switch for its 8-bit LLM", means="llm_load_in_8bit"),
}
# files and folders, found from the current folder or the YAML's; the first three must exist at start-up
PATH_KEYS = ("ckpt", "ckpt_2", "llama_proj_model", "vit_ckpt", "q_former_model", "imagebind_ckpt_path", "llama_model")
CHECKED_PATH_KEYS = ("ckpt", "ckpt_2", "llama_proj_model", "vit_ckpt", "q_former_model", "imagebind_ckpt_path")
PROMPT_PATH_KEYS = ("prompt_path",)  # also found among the package's own prompts


def fill_derived(model):
    """``end_sym`` and ``prompt_template`` left null follow ``template``; ``num_visual_tokens`` is
    what the frames give the LLM (the datasets' ``num_video_query_token`` follows it)."""
    derived = visual_token_count(model)
    if model.get("num_visual_tokens") not in (None, derived):  # e.g. a run's config, trained with other flags
        logger.warning("model.num_visual_tokens is derived from the freeze flags: %d, not %s", derived,
                       model.num_visual_tokens)
    model.num_visual_tokens = derived
    template = registry.mapping["template"].get(model.get("template"))
    if template is None:
        return
    if model.get("end_sym") is None:
        model.end_sym = template.end_sym
    if model.get("prompt_template") is None:
        model.prompt_template = template.caption_prompt.replace("{q}", "{}") + " "


def config_problems(model, datasets):
    """Settings that are each valid but contradict each other (every message names both keys),
    and processors whose frames the model cannot take."""
    problems = []
    template = template_in_config(model.get("template"), "model.template", problems)
    if template is not None and model.end_sym != template.end_sym:
        problems.append(
            f"model.end_sym is {model.end_sym!r} but model.template {template.name!r} ends answers with "
            f"{template.end_sym!r}; set model.template to the template you mean "
            f"(llama_v2: '</s>', vicuna: '###') and leave end_sym out"
        )
    if template is not None and template.marker not in model.prompt_template:
        problems.append(
            f"model.prompt_template {model.prompt_template!r} is not a {template.name} prompt (model.template); "
            f"expected one containing {template.marker!r}, or leave prompt_template out"
        )
    if model.get("vit_model", "eva_vit_g") != "eva_vit_g":
        problems.append(f"model.vit_model: {model.vit_model!r} is not available; this version builds "
                        "the EVA ViT-g of BLIP-2 (eva_vit_g) at the sizes the vit_* keys give")
    if model.get("freeze_llm") is False and model.get("llama_dtype") != "fp32":
        problems.append(
            f"model.freeze_llm is False but model.llama_dtype is {model.llama_dtype}: AdamW would update "
            f"{model.llama_dtype} weights (small updates vanish; fp16 AMP cannot unscale fp16 gradients); "
            "set model.llama_dtype=fp32 to train the LLM, or keep model.freeze_llm=True"
        )
    hf_folder = model.get("q_former_model") and Path(str(model.q_former_model)).is_dir()  # brings the ViT
    if model.get("freeze_vit") and not model.get("vit_ckpt") and not hf_folder:
        problems.append("model.freeze_vit is True but model.vit_ckpt is null: the frozen ViT would stay random; set "
                        "model.vit_ckpt to eva_vit_g.pth (or its URL), model.q_former_model to a Hugging Face BLIP-2 "
                        "folder, or model.vit_ckpt=random to keep it random on purpose")
    if model.get("freeze_qformer") and not model.get("q_former_model"):
        problems.append("model.freeze_qformer is True but model.q_former_model is null: the frozen image Q-Former "
                        "would stay random; set model.q_former_model to blip2_pretrained_flant5xxl.pth (or its URL) "
                        "or a Hugging Face BLIP-2 folder, or model.q_former_model=random to keep it random on purpose")
    problems += _audio_branch_problems(model, datasets)
    cached = [name for name, ds in datasets.items() if ds.get("feature_cache")]
    if cached and (problem := frozen_encoders_problem(model)):
        problems.append(f"datasets.{cached[0]}.feature_cache: {problem}")
    if model.get("llm_load_in_8bit") and model.get("llm_load_in_4bit"):
        problems.append("model.llm_load_in_8bit and model.llm_load_in_4bit are both True; choose one")
    lora = model.get("lora") or {}
    if lora.get("r") and model.get("freeze_llm") is False:
        problems.append("model.lora.r is set but model.freeze_llm is False: LoRA trains adapters beside a frozen LLM; "
                        "keep model.freeze_llm=True, or set model.lora.r=0 to train the whole LLM")
    if model.get("attn_implementation") not in (None, "sdpa", "eager", "flash_attention_2"):
        problems.append(f"model.attn_implementation: {model.attn_implementation!r} is not one of sdpa, eager, flash_attention_2")
    if model.get("vit_precision") == "fp16" and model.get("freeze_vit") is False:
        problems.append(
            "model.freeze_vit is False but model.vit_precision is fp16: a ViT trained in fp16 diverges; "
            "set model.vit_precision=fp32 or keep model.freeze_vit=True"
        )
    for name, ds in datasets.items():
        for split, proc in (ds.get("vis_processor") or {}).items():
            path = f"datasets.{name}.vis_processor.{split}"
            size = proc.get("image_size")
            if size is not None and "img_size" in model and size != model.img_size:
                problems.append(f"{path}.image_size ({size}) must equal model.img_size ({model.img_size}): the "
                                "vision encoder's position embedding is built for it")
            n_frms = proc.get("n_frms")
            if n_frms is not None and "max_frame_pos" in model and n_frms > model.max_frame_pos:
                problems.append(f"{path}.n_frms ({n_frms}) exceeds model.max_frame_pos ({model.max_frame_pos}); "
                                "raise model.max_frame_pos or sample fewer frames")
            if split == "train" and proc.get("motion_channels") and model.get("freeze_vit"):
                problems.append(f"{path}.motion_channels is True but model.freeze_vit is True: a frozen encoder "
                                "never learnt to see frames of grey and frame-to-frame change; set "
                                "model.freeze_vit=False to train it on them, or motion_channels=False")
    problems += _motion_channels_mixed(datasets)
    return problems


def frozen_encoders_problem(model):
    """Why a feature cache cannot stand for the ViT and image Q-Former of ``model`` (its config):
    one of them trains; None when both are frozen."""
    training = [key for key in ("freeze_vit", "freeze_qformer") if not model.get(key)]
    if not training:
        return None
    return (f"model.{training[0]} is False, but a feature cache holds the outputs of the frozen ViT and image Q-Former, "
            "which change as they train; set " + " and ".join(f"model.{key}=True" for key in training)
            + ", or train from pixels (no feature_cache)")


def _audio_branch_problems(model, datasets):
    """The audio branch's files and the frames it can take."""
    if not model.get("equip_audio_branch"):
        hearing = [name for name, ds in datasets.items() if ds.get("sound")]
        if hearing:
            return [f"datasets.{hearing[0]}.sound is True but model.equip_audio_branch is False: no branch would hear "
                    f"it; set datasets.{hearing[0]}.sound=False, or evaluate a model with the audio branch"]
        if model.get("ckpt_2"):
            return [f"model.ckpt_2 ({model.ckpt_2}) is an audio-branch checkpoint but model.equip_audio_branch is "
                    "False; set model.equip_audio_branch=True (with model.imagebind_ckpt_path), or model.ckpt_2=null"]
        return []
    problems = []
    if not model.get("imagebind_ckpt_path"):
        problems.append("model.equip_audio_branch is True but model.imagebind_ckpt_path is null: the frozen ImageBind "
                        "towers would stay random; set it to the folder holding imagebind_huge.pth, or "
                        "model.imagebind_ckpt_path=random to keep them random on purpose")
    if model.img_size % model.imagebind.vision_patch:
        problems.append(f"model.img_size ({model.img_size}) is not a multiple of model.imagebind.vision_patch "
                        f"({model.imagebind.vision_patch}): ImageBind's vision tower cuts the frames into whole patches")
    if "audio" in frame_branches(model):
        for name, ds in datasets.items():
            if ds.get("feature_cache"):
                problems.append(f"datasets.{name}.feature_cache holds the image Q-Former's features, but the frames "
                                "feed the audio branch (through ImageBind) while it trains; remove the feature_cache")
            for split, proc in (ds.get("vis_processor") or {}).items():
                if (proc.get("n_frms") or 0) > MAX_AUDIO_CLIPS:
                    problems.append(f"datasets.{name}.vis_processor.{split}.n_frms ({proc.n_frms}) exceeds the audio "
                                    f"branch's {MAX_AUDIO_CLIPS} positions, which the frames feed while it trains; "
                                    f"sample at most {MAX_AUDIO_CLIPS} frames")
    return problems


def _motion_channels_mixed(datasets):
    """One encoder sees either motion channels or colour: a processor that cannot make motion
    channels (an image processor) beside one that does would feed it both."""
    processors = [(f"datasets.{name}.vis_processor.{split}", proc) for name, ds in datasets.items()
                  for split, proc in (ds.get("vis_processor") or {}).items()]
    motion = [path for path, proc in processors if proc.get("motion_channels")]
    colour = [f"{path} ({proc.get('name')})" for path, proc in processors if "motion_channels" not in proc]
    if not motion or not colour:
        return []
    return [f"{motion[0]}.motion_channels is True but {colour[0]} gives the same encoder colour frames; train "
            "that dataset with another model, or set motion_channels=False"]


def runtime_problems(model, device):
    """What this machine lacks for the model: low-bit LLM loading needs a CUDA GPU and bitsandbytes."""
    import importlib.util

    low_bit = [key for key in ("llm_load_in_8bit", "llm_load_in_4bit") if model.get(key)]
    if low_bit and not device.startswith("cuda"):
        return [f"model.{low_bit[0]} needs a CUDA GPU (bitsandbytes) but run.device is {device!r}; "
                f"set model.{low_bit[0]}=False (and model.llama_dtype=bf16) to run on the CPU"]
    if low_bit and importlib.util.find_spec("bitsandbytes") is None:
        return [f"model.{low_bit[0]} needs bitsandbytes, which is not installed: pip install bitsandbytes"]
    return []
