"""The audio-language branch: the published AL checkpoints' names and shapes at full size on the
meta device, ImageBind's file loaded into its towers, the branch trained on frames alone (no audio
data, as the original), and VL + AL checkpoints loaded together and written back."""

import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

import video_llama  # noqa: F401
from video_llama.common.registry import registry
from video_llama.models.audio_branch import AUDIO_PARTS

from conftest import DATA_DIR, TINY_CONFIG, build

AL_ONLY = ["model.equip_audio_branch=True", "model.imagebind_ckpt_path=random", "model.frozen_video_Qformer=True",
           "model.frozen_llama_proj=True", "model.frozen_audio_Qformer=False"]


@pytest.mark.parametrize("reference, llm_width", [("AL_7B", 4096), ("AL_13B", 5120)])
def test_full_size_model_has_the_published_audio_branch(reference, llm_width):
    from video_llama.models.checkpoint import original_to_ours, ours_to_original

    VideoLLAMA = registry.get_model_class("video_llama")
    cfg = OmegaConf.merge(VideoLLAMA.default_config("pretrain_llama_v2"),
                          {"equip_audio_branch": True, "llama_hidden_size": llm_width})
    with torch.device("meta"):
        model = VideoLLAMA(cfg, on_cuda=False)
    params = dict(model.named_parameters())
    ours = {name: tuple(p.shape) for name, p in params.items() if name.split(".")[0] in AUDIO_PARTS}
    published = json.loads((DATA_DIR / "original_checkpoint_keys.json").read_text())[reference]
    mapped = {original_to_ours(n): tuple(s) for n, s in published.items() if original_to_ours(n)}
    assert ours == mapped  # every AL name, with its shape, and nothing else
    assert sum(params[name].numel() for name in ours) == {"AL_7B": 22_855_680, "AL_13B": 23_643_136}[reference]
    towers = {tower: sum(p.numel() for n, p in params.items() if n.startswith("audio_encoder.") and f".{tower}" in n)
              for tower in ("vision", "audio")}
    assert towers == {"vision": 632_829_440, "audio": 86_235_648}  # docs/checkpoints.md's counts
    assert all(ours_to_original(name) in published for name in ours)  # and back to the original's names
    # ImageBind-huge's towers as imagebind_huge.pth names them: 224/14 = 16² patches, 12 × 19 filterbank patches
    assert params["audio_encoder.modality_preprocessors.vision.pos_embedding_helper.pos_embed"].shape == (1, 257, 1280)
    assert params["audio_encoder.modality_preprocessors.vision.rgbt_stem.proj.1.weight"].shape == (1280, 3, 2, 14, 14)
    assert params["audio_encoder.modality_preprocessors.audio.pos_embedding_helper.pos_embed"].shape == (1, 229, 768)
    assert params["audio_encoder.modality_trunks.audio.blocks.11.attn.bias_k"].shape == (1, 1, 768)
    assert "audio_encoder.modality_trunks.vision.blocks.31.mlp.fc2.weight" in params
    assert params["audio_encoder.modality_heads.audio.2.weight"].shape == (1024, 768)
    assert not any(p.requires_grad for n, p in params.items() if n.startswith("audio_encoder."))


def test_the_audio_tower_reads_what_the_soundtrack_processor_makes():
    """The tower is built for 128 × 204 filterbanks and the processor makes them: its patches and
    position embedding fit (229 = 1 + 12 × 19), and the embeddings are ImageBind's: norm 20."""
    from video_llama.models.imagebind import AUDIO, ImageBindTowers
    from video_llama.processors.audio import melspec_clips

    cfg = registry.get_model_class("video_llama").default_config("tiny")
    towers = ImageBindTowers(cfg.imagebind).eval()
    clips = melspec_clips(torch.randn(16000 * 5) * 0.1, clips=3)
    with torch.no_grad():
        embeddings = towers(clips.unsqueeze(0), AUDIO)
    assert embeddings.shape == (1, 3, cfg.imagebind.embed_dim)
    assert torch.allclose(embeddings.norm(dim=-1), torch.full((1, 3), 20.0))


@pytest.fixture(scope="module")
def al_config(tiny_llm_dir, clips_dir):
    from video_llama.common.config import Config

    return Config.from_file(TINY_CONFIG, [
        f"model.llama_model={tiny_llm_dir}", f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
        f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
        f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}",
        "datasets.webvid_instruct.vis_processor.train.n_frms=4", "datasets.webvid_instruct.num_video_query_token=null",
        *AL_ONLY])


def test_imagebind_file_fills_the_towers_and_its_other_towers_are_left_unused(al_config, tmp_path, caplog):
    source = build(al_config)
    towers = {n: t + 1.0 if t.is_floating_point() else t for n, t in source.audio_encoder.state_dict().items()}
    towers["modality_trunks.text.blocks.0.attn.in_proj_weight"] = torch.zeros(3, 3)  # a tower we do not build
    torch.save(towers, tmp_path / "imagebind_huge.pth")
    with caplog.at_level(logging.INFO):
        model = build(al_config, f"imagebind_ckpt_path={tmp_path}")
    loaded = model.audio_encoder.state_dict()
    assert all(torch.equal(loaded[n], t) for n, t in towers.items() if n in loaded)
    assert "1 file entries unused (audio_encoder: 1)" in caplog.text


def original_layout_file(model, parts, path):
    from video_llama.models.checkpoint import to_original

    torch.save({"model": to_original({n: t for n, t in model.state_dict().items() if n.split(".")[0] in parts})}, path)
    return path


VL_PARTS = ("video_Qformer", "video_query_tokens", "video_frame_position_embedding", "llama_proj")


@pytest.fixture(scope="module")
def published(al_config, tmp_path_factory):
    """A VL and an AL checkpoint in the published layout, from two differently seeded models."""
    folder = tmp_path_factory.mktemp("published")
    torch.manual_seed(1)
    vl = registry.get_model_class("video_llama").from_config(al_config.model_cfg)
    torch.manual_seed(2)
    al = registry.get_model_class("video_llama").from_config(al_config.model_cfg)
    return (vl, original_layout_file(vl, VL_PARTS, folder / "VL_tiny.pth"),
            al, original_layout_file(al, AUDIO_PARTS, folder / "AL_tiny.pth"))


def test_vl_and_al_checkpoints_load_together_and_write_back_under_the_original_names(al_config, published, tmp_path):
    from video_llama.models.checkpoint import save_original_layout

    vl, vl_path, al, al_path = published
    model = build(al_config, f"ckpt={vl_path}", f"ckpt_2={al_path}", "frozen_audio_Qformer=True")
    state = model.state_dict()
    for source, parts in ((vl, VL_PARTS), (al, AUDIO_PARTS)):
        assert all(torch.equal(state[n], t) for n, t in source.state_dict().items() if n.split(".")[0] in parts)
    save_original_layout(model, tmp_path / "both.pth")
    written = torch.load(tmp_path / "both.pth")["model"]
    reference = json.loads((DATA_DIR / "original_checkpoint_keys.json").read_text())
    expected = {**torch.load(vl_path)["model"], **torch.load(al_path)["model"]}
    assert set(written) == set(expected) and all(torch.equal(written[n], t) for n, t in expected.items())
    assert {n.split(".")[0] for n in written} == {n.split(".")[0] for r in ("VL_7B", "AL_7B") for n in reference[r]}


def test_a_frozen_audio_branch_that_no_file_fills_is_refused(al_config, published):
    from video_llama.common.errors import CheckpointError

    _, vl_path, _, _ = published
    with pytest.raises(CheckpointError, match="no file filled the audio branch .* set model.ckpt_2"):
        build(al_config, f"ckpt={vl_path}", "frozen_audio_Qformer=True")


def test_the_audio_branch_trains_on_frames_alone_and_its_run_keeps_the_vision_branch(al_config, published, tiny_llm_dir,
                                                                                     clips_dir, tmp_path, caplog):
    """The original's audiobranch stage 2 as written (its YAML at tiny sizes, our paths): the VL
    checkpoint frozen, the AL one trained on video data without sound; only the audio Q-Former,
    its query tokens, position embedding and projection change; the run folder alone rebuilds the
    whole model."""
    import shutil

    from video_llama.common.config import Config
    from video_llama.jobs.experiment import train
    from video_llama.models.video_llama import VideoLLAMA

    from conftest import REPO_ROOT

    vl, vl_path, al, published_al = published
    al_path = shutil.copy(published_al, tmp_path / "AL_stage1.pth")  # removed below: the run holds what it gave
    caplog.set_level(logging.INFO, logger="video_llama.runners.runner_base")
    summary = train(["--cfg-path", str(REPO_ROOT / "train_configs/audiobranch_stage2_finetune.yaml"), "--options",
                     "model.model_type=tiny", f"model.llama_model={tiny_llm_dir}", "model.imagebind_ckpt_path=random",
                     f"model.ckpt={vl_path}", f"model.ckpt_2={al_path}", "model.img_size=112",
                     f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
                     f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
                     f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}",
                     "datasets.webvid_instruct.vis_processor.train.n_frms=4",
                     "datasets.webvid_instruct.vis_processor.train.image_size=112", "run.max_epoch=1",
                     "run.iters_per_epoch=12", "run.init_lr=3e-3", "run.warmup_steps=1", "run.batch_size_train=2",
                     "run.num_workers=0", f"run.output_dir={tmp_path}", "run.device=cpu", "run.amp=False"])
    run_dir = Path(summary["run_dir"])
    assert "stay off cpu: the frames feed the audio branch alone" in caplog.text  # the ViT did nothing
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses
    saved = load_file(str(run_dir / "checkpoint_e1_s0" / "model.safetensors"))
    assert {n.split(".")[0] for n in saved} == {*AUDIO_PARTS, *VL_PARTS}
    before = {**{n: t for n, t in vl.state_dict().items() if n.split(".")[0] in VL_PARTS},
              **{n: t for n, t in al.state_dict().items() if n.split(".")[0] in AUDIO_PARTS}}
    changed = {n.split(".")[0] for n, t in saved.items() if not torch.equal(t, before[n])}
    assert changed == set(AUDIO_PARTS)  # the vision branch stayed as model.ckpt gave it
    Path(al_path).unlink()
    again = VideoLLAMA.from_pretrained(run_dir)  # ckpt_2 is not read: the run holds the audio branch
    assert all(torch.equal(again.state_dict()[n], t) for n, t in saved.items())
    adopted = Config.from_file(TINY_CONFIG, [f"model.ckpt={run_dir}", f"model.llama_model={tiny_llm_dir}",
                                             f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}"], trained_model=True)
    assert adopted.model_cfg.ckpt_2 is None and adopted.model_cfg.equip_audio_branch  # the run's model, no AL file
    # the run as ckpt_2 beside another VL checkpoint: its audio branch only
    other_vl = original_layout_file(al, VL_PARTS, tmp_path / "other_VL.pth")
    mixed = build(al_config, f"ckpt={other_vl}", f"ckpt_2={run_dir}", "frozen_audio_Qformer=True").state_dict()
    assert all(torch.equal(mixed[n], t) for n, t in saved.items() if n.split(".")[0] in AUDIO_PARTS)
    assert all(torch.equal(mixed[n], t) for n, t in al.state_dict().items() if n.split(".")[0] in VL_PARTS)


@pytest.mark.parametrize("path, trains", [
    ("train_configs/audiobranch_stage1_pretrain.yaml", set(AUDIO_PARTS)),
    ("train_configs/audiobranch_stage2_finetune.yaml", set(AUDIO_PARTS)),
    ("eval_configs/video_llama_eval_withaudio.yaml", {"video_Qformer", "video_query_tokens",
                                                       "video_frame_position_embedding", "llama_proj"}),
])
def test_the_original_audio_branch_configs_build_the_full_model(path, trains):
    """The original's AL configs (paths aside) assemble: both branches at full size on meta, the
    freeze flags training what the original trains, the datasets' placeholders the frames' tokens."""
    from video_llama.common.config import Config

    from conftest import REPO_ROOT

    cfg = Config.from_file(REPO_ROOT / path, ["run.device=cpu"])
    model_cfg = OmegaConf.merge(cfg.model_cfg, {"llama_hidden_size": 4096})
    with torch.device("meta"):
        model = registry.get_model_class("video_llama")(model_cfg, on_cuda=False)
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == trains
    assert {ds.num_video_query_token for ds in cfg.datasets_cfg.values()} == {model.num_visual_tokens}


@pytest.mark.parametrize("flags, branches, tokens", [
    (["frozen_video_Qformer=False", "frozen_audio_Qformer=True", "ckpt=random"], ("video",), 32),
    (["frozen_video_Qformer=True", "frozen_audio_Qformer=False", "frozen_llama_proj=True"], ("audio",), 8),
    (["frozen_video_Qformer=False", "frozen_audio_Qformer=False"], ("audio", "video"), 40),
])
def test_the_freeze_flags_decide_what_the_frames_feed_and_what_learns(al_config, flags, branches, tokens):
    """Video only, audio only, both (audio tokens first): the placeholders a prompt holds follow,
    and a step's gradients reach exactly the parts that train; an image is a one-frame video to both."""
    from video_llama.conversation import video_placeholder
    from video_llama.conversation.templates import conversation_ids

    model = build(al_config, *flags)
    assert model.frame_branches == branches and model.num_visual_tokens == tokens
    tokenizer = model.llama_tokenizer
    ids, labels = conversation_ids(tokenizer, model.template, [(video_placeholder(tokens) + " What is it?", "a cat")])
    batch = {"input_ids": torch.tensor([ids] * 2), "labels": torch.tensor([labels] * 2),
             "attention_mask": torch.ones(2, len(ids), dtype=torch.long)}
    for pixels in (torch.randn(2, 3, 4, 112, 112), torch.randn(2, 3, 112, 112)):  # a clip, an image
        model.zero_grad()
        model({**batch, "image": pixels})["loss"].backward()
        learning = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        trains = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        assert learning == trains
        assert ("audio_Qformer" in learning) == ("audio" in branches)
        assert ("video_Qformer" in learning) == ("video" in branches)


def test_the_original_stage_1_projection_file_starts_llama_proj_unless_ckpt_brings_one(al_config, published, tmp_path):
    """llama_proj_model (the original's stage 1: MiniGPT-4's pretrained_minigpt4.pth, whose other
    weights are not ours) fills llama_proj where model.ckpt has none; the projection is then kept
    in the run's checkpoint, so the run needs the file no more."""
    vl, vl_path, _, _ = published
    minigpt4 = {"llama_proj.weight": torch.full_like(vl.llama_proj.weight, 0.5),
                "llama_proj.bias": torch.zeros_like(vl.llama_proj.bias), "Qformer.bert.pooler.dense.weight": torch.ones(2)}
    torch.save({"model": minigpt4}, tmp_path / "pretrained_minigpt4.pth")
    vision_only = ["equip_audio_branch=False", "frozen_video_Qformer=False", "frozen_llama_proj=True",
                   f"llama_proj_model={tmp_path / 'pretrained_minigpt4.pth'}"]
    model = build(al_config, *vision_only, "ckpt=random")
    assert torch.equal(model.llama_proj.weight, minigpt4["llama_proj.weight"])
    assert {"llama_proj.weight", "llama_proj.bias"} <= set(model.checkpoint_state_dict())  # frozen, yet kept
    over = build(al_config, *vision_only, f"ckpt={vl_path}")  # ckpt's projection wins
    assert torch.equal(over.llama_proj.weight, vl.llama_proj.weight)


def test_the_plan_leaves_out_the_image_encoders_the_audio_branch_does_not_use(tiny_llm_dir, clips_dir):
    """Frames that feed the audio branch alone never reach the ViT and image Q-Former: the planner
    leaves them off the device as the runner does, unless a dataset is heard (sound sends the frames
    to the video branch in evaluation): then they are resident and idle in the step."""
    from video_llama.common.config import Config
    from video_llama.jobs.plan import meta_model, model_config, plan_step, setting_of

    options = [f"model.llama_model={tiny_llm_dir}", f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
               f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
               f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}", "datasets.webvid_instruct.num_video_query_token=null",
               "datasets.webvid_instruct.vis_processor.train.n_frms=4", *AL_ONLY]
    plans = {}
    for heard in (False, True):
        cfg = Config.from_file(TINY_CONFIG, [*options, f"datasets.webvid_instruct.sound={heard}"])
        plans[heard] = plan_step(cfg, setting_of(cfg), gpu=False)
    off, idle = plans[False], plans[True]
    assert off.released == "the frames feed the audio branch alone (through ImageBind)" and off.idle == 0
    assert idle.released == "" and idle.idle > 0
    assert idle.parameters - off.parameters == idle.idle and idle.flops == off.flops  # the step is the same
    model = meta_model(model_config(cfg, setting_of(cfg)), gpu=False)  # counted by the modules' names
    encoders = sum(t.numel() * t.element_size() for n, t in [*model.named_parameters(), *model.named_buffers()]
                   if n.split(".")[0] in ("visual_encoder", "ln_vision", "Qformer", "query_tokens"))
    assert 0 <= encoders - idle.idle <= 0.001 * encoders  # the state dict leaves out non-persistent position ids
