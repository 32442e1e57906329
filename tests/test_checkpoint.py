"""Published layouts ↔ our modules: names, shapes, exact round trips and equal outputs."""

import json
import math

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

import video_llama  # noqa: F401
from video_llama.common.registry import registry
from video_llama.models.checkpoint import (fit_frame_positions, load_weights, save_original_layout,
                                           to_original, to_ours)

from conftest import DATA_DIR

REFERENCE = json.loads((DATA_DIR / "original_checkpoint_keys.json").read_text())
VIDEO_PART = ("video_Qformer.", "video_query_tokens", "video_frame_position_embedding", "llama_proj")


def tiny_cfg(**overrides):
    cls = registry.get_model_class("video_llama")
    cfg = cls.default_config("tiny")
    # the image Q-Former keeps BLIP-2's 12 layers so that its key set is the published one
    cfg.merge_with({"llama_hidden_size": 48, "img_size": 56, "qformer_num_layers": 12, "num_query_token": 8,
                    "num_video_query_token": 8, **overrides})
    return cfg


def build(**overrides):
    return registry.get_model_class("video_llama")(tiny_cfg(**overrides))


def randomized(model, seed=0):
    """Every tensor random, LayerNorms included, so a misplaced tensor cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(t.shape, generator=gen) for n, t in model.state_dict().items()}


def test_trainable_part_and_image_qformer_have_the_published_names():
    model = build()
    state = to_original(randomized(model))
    video = {n for n in state if n.startswith(VIDEO_PART)}
    assert video == set(REFERENCE["VL_7B"])
    image = {n for n in state if n.startswith(("Qformer.", "query_tokens"))}
    assert image == set(REFERENCE["BLIP2_Qformer"])
    for name in video:  # same shapes where the sizes are not scaled down
        if name.endswith("position_ids"):
            assert list(state[name].shape) == REFERENCE["VL_7B"][name]


def test_original_to_ours_to_original_is_bit_exact():
    original = to_original(randomized(build()))
    original["video_Qformer.bert.embeddings.word_embeddings.weight"] = torch.randn(10, 64)  # dropped on load
    ours, unused = to_ours(original)
    assert set(unused) == {"video_Qformer.bert.embeddings.position_ids", "Qformer.bert.embeddings.position_ids",
                           "video_Qformer.bert.embeddings.word_embeddings.weight"}
    back = to_original(ours)
    del original["video_Qformer.bert.embeddings.word_embeddings.weight"]
    assert set(back) == set(original) and all(torch.equal(back[n], original[n]) for n in original)
    al = {n: torch.zeros(s) for n, s in REFERENCE["AL_7B"].items()}
    assert set(to_original(to_ours(al)[0])) == set(al)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_published_layout_loads_every_tensor_in_place(tmp_path, fmt):
    source = build()
    values = randomized(source, seed=1)
    original = to_original(values)
    path = tmp_path / f"VL_tiny.{fmt}"
    if fmt == "pth":
        torch.save({"model": original}, path)
    else:
        save_file({n: t.contiguous() for n, t in original.items()}, str(path))
    target = build()
    report = load_weights(target, path, "model.ckpt", required_prefixes=())
    loaded = target.state_dict()
    assert all(torch.equal(loaded[n], values[n]) for n in values)
    assert set(report.loaded) == set(values) and not report.absent_expected


def test_wrong_shapes_missing_and_foreign_weights_are_errors(tmp_path):
    model = build()
    state = {n: t for n, t in to_original(randomized(model)).items() if n.startswith(VIDEO_PART)}
    bad = dict(state, **{"llama_proj.weight": torch.zeros(99, 64)})
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"llama_proj.weight: file \(99, 64\) vs model \(48, 64\)"):
        load_weights(build(), tmp_path / "bad.pth", "model.ckpt")
    partial = {n: t for n, t in state.items() if not n.startswith("llama_proj")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"lacks 2 weight\(s\).*llama_proj"):
        load_weights(build(), tmp_path / "partial.pth", "model.ckpt")
    torch.save({"model": dict(state, **{"t5_proj.weight": torch.zeros(2, 2)})}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="does not have.*t5_proj.weight"):
        load_weights(build(), tmp_path / "foreign.pth", "model.ckpt")
    with pytest.raises(FileNotFoundError, match="model.ckpt: checkpoint not found"):
        load_weights(build(), tmp_path / "nope.pth", "model.ckpt")


def test_more_frames_interpolate_the_frame_position_embedding(tmp_path):
    state = {n: t for n, t in to_original(randomized(build())).items() if n.startswith(VIDEO_PART)}
    torch.save({"model": state}, tmp_path / "vl.pth")
    model = build(max_frame_pos=64)
    report = load_weights(model, tmp_path / "vl.pth", "model.ckpt")
    table, original = model.video_frame_position_embedding.weight.detach(), state["video_frame_position_embedding.weight"]
    assert table.shape[0] == 64 and report.adapted
    assert torch.allclose(table[0], original[0]) and torch.allclose(table[-1], original[-1])
    assert torch.allclose(fit_frame_positions(original, 16), original[:16])


def reference_qformer(state, prefix, queries, encoder, heads, cross_freq, eps=1e-12):
    """BLIP-2's query path written out from the original (BERT) names: post-LN BERT layers whose
    self-attention runs over the queries, with cross-attention every ``cross_freq`` layers."""
    def linear(x, name):
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def norm(x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], eps)

    def attention(x, context, name):
        q, k, v = (linear(t, f"{name}.self.{p}") for t, p in ((x, "query"), (context, "key"), (context, "value")))
        split = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(x.shape)
        return norm(linear(out, f"{name}.output.dense") + x, f"{name}.output.LayerNorm")

    h = norm(queries, f"{prefix}.bert.embeddings.LayerNorm")
    layers = sorted({int(n.split(".")[4]) for n in state if n.startswith(f"{prefix}.bert.encoder.layer.")})
    for i in layers:
        base = f"{prefix}.bert.encoder.layer.{i}"
        h = attention(h, h, f"{base}.attention")
        if i % cross_freq == 0:
            h = attention(h, encoder, f"{base}.crossattention")
        ff = torch.nn.functional.gelu(linear(h, f"{base}.intermediate_query.dense"))
        h = norm(linear(ff, f"{base}.output_query.dense") + h, f"{base}.output_query.LayerNorm")
    return h


@pytest.mark.parametrize("which, cross_freq, width", [("Qformer", 2, 64), ("video_Qformer", 1, 64)])
def test_qformer_mapping_gives_the_reference_outputs(which, cross_freq, width):
    model = build().eval()
    values = randomized(model, seed=3)
    values = {n: (t * 0.1 if t.dim() > 1 else t) for n, t in values.items()}  # keep attention well-scaled
    original = to_original(values)
    model.load_state_dict(to_ours(original)[0])
    gen = torch.Generator().manual_seed(4)
    queries = torch.randn(2, 8, 64, generator=gen)
    encoder_width = model.cfg.vit_embed_dim if which == "Qformer" else 64
    encoder = torch.randn(2, 13, encoder_width, generator=gen)
    with torch.no_grad():
        ours = getattr(model, which)(query_embeds=queries, encoder_hidden_states=encoder).last_hidden_state
    expected = reference_qformer(original, which, queries, encoder, heads=model.cfg.qformer_num_heads,
                                 cross_freq=cross_freq, eps=getattr(model, which).config.layer_norm_eps)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()


def test_hugging_face_blip2_vision_and_qformer_load_with_equal_outputs(tmp_path):
    from transformers import Blip2QFormerConfig, Blip2QFormerModel, Blip2VisionConfig, Blip2VisionModel

    torch.manual_seed(5)
    cfg = tiny_cfg()
    hf_vision = Blip2VisionModel(Blip2VisionConfig(hidden_size=cfg.vit_embed_dim, intermediate_size=int(cfg.vit_embed_dim * cfg.vit_mlp_ratio),
                                                   num_hidden_layers=cfg.vit_depth, num_attention_heads=cfg.vit_num_heads,
                                                   image_size=cfg.img_size, patch_size=cfg.vit_patch_size, layer_norm_eps=1e-5)).eval()
    for name, param in hf_vision.named_parameters():  # random everything (biases and norms included)
        torch.nn.init.normal_(param, std=0.1)
        if name.endswith("qkv.bias"):  # EVA has no key bias: BLIP-2 files hold zeros there
            param.data[cfg.vit_embed_dim: 2 * cfg.vit_embed_dim] = 0
    hf_qformer = Blip2QFormerModel(Blip2QFormerConfig(hidden_size=64, num_hidden_layers=12, num_attention_heads=4,
                                                      intermediate_size=128, encoder_hidden_size=cfg.vit_embed_dim,
                                                      use_qformer_text_input=False))
    state = {f"vision_model.{n}": t for n, t in hf_vision.state_dict().items()}
    state.update({f"qformer.{n}": t for n, t in hf_qformer.state_dict().items()})
    state["query_tokens"] = torch.randn(1, 8, 64)
    state["language_projection.weight"] = torch.randn(4, 64)  # not used by Video-LLaMA
    (tmp_path / "blip2").mkdir()
    save_file({n: t.contiguous() for n, t in state.items()}, str(tmp_path / "blip2" / "model.safetensors"))

    model = build().eval()
    report = load_weights(model, tmp_path / "blip2", "model.q_former_model", required_prefixes=("Qformer.", "query_tokens"),
                          wanted_prefixes=("vision_model.", "qformer.", "query_tokens"))
    assert report.unused == []  # language_projection is never read from the folder
    images = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        expected = hf_vision(pixel_values=images).last_hidden_state
        ours = model.ln_vision(model.visual_encoder.forward_features(images))
    assert torch.allclose(ours, expected, atol=1e-4), (ours - expected).abs().max()
    assert torch.equal(model.query_tokens, state["query_tokens"])
    assert all(torch.equal(model.Qformer.state_dict()[n], t) for n, t in hf_qformer.state_dict().items())


def test_lavis_vit_file_and_save_in_original_layout(tmp_path):
    source = build()
    values = randomized(source, seed=6)
    vit = {n[len("visual_encoder."):]: t for n, t in values.items() if n.startswith("visual_encoder.")}
    torch.save(vit, tmp_path / "eva_vit_tiny.pth")
    model = build(vit_ckpt=str(tmp_path / "eva_vit_tiny.pth"))
    model.load_pretrained_parts()
    assert all(torch.equal(model.state_dict()[f"visual_encoder.{n}"], t) for n, t in vit.items())

    source.load_state_dict(values)
    save_original_layout(source, tmp_path / "VL_ours_as_original.pth")
    saved = torch.load(tmp_path / "VL_ours_as_original.pth", weights_only=True)["model"]
    assert set(saved) == set(REFERENCE["VL_7B"])
    reloaded = build()
    load_weights(reloaded, tmp_path / "VL_ours_as_original.pth", "model.ckpt")
    assert all(torch.equal(reloaded.state_dict()[n], values[n]) for n in values if n.startswith(VIDEO_PART))


def test_from_pretrained_rebuilds_our_checkpoint(tiny_llm_dir, clips_dir, tmp_path):
    from video_llama.common.run_folder import RunFolder

    from conftest import tiny_config

    cfg = tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir)
    model_cls = registry.get_model_class("video_llama")
    model = model_cls.from_config(cfg.model_cfg)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(1.0)
    RunFolder(tmp_path).save_checkpoint("checkpoint_e1_s0", model.checkpoint_state_dict(), {}, OmegaConf.to_yaml(cfg.config))
    again = model_cls.from_pretrained(tmp_path)
    assert all(torch.equal(again.state_dict()[n], t) for n, t in model.checkpoint_state_dict().items())


def test_the_start_up_table_says_a_trained_llm_comes_from_the_checkpoint(tiny_llm_dir, clips_dir, tmp_path):
    from video_llama.common.run_folder import RunFolder

    from conftest import tiny_config

    cfg = tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir, "model.freeze_llm=False")
    model_cls = registry.get_model_class("video_llama")
    model = model_cls.from_config(cfg.model_cfg)
    RunFolder(tmp_path).save_checkpoint("checkpoint_e1_s0", model.checkpoint_state_dict(), {}, OmegaConf.to_yaml(cfg.config))
    sources = model_cls.from_pretrained(tmp_path).load_pretrained_parts()
    llm = {origin for name, origin in sources.items() if name.startswith("llama_model.")}
    assert llm == {"model.ckpt"}  # not model.llama_model, whose weights the checkpoint's replaced


def test_lavis_qformer_file_with_heads_we_do_not_use_loads_and_ckpt_need_not_repeat_it(tmp_path, caplog):
    """A LAVIS BLIP-2 (Flan-T5) file holds t5_proj.* and ln_vision.* beside the Q-Former: t5_proj is
    reported unused, not fatal. With freeze_qformer False the Q-Former trains, and a VL ckpt (which
    has no Q-Former) still loads: it must provide only what no earlier file did."""
    import logging

    source = build()
    values = randomized(source, seed=8)
    original = to_original(values)
    blip2 = {n: t for n, t in original.items() if n.startswith(("Qformer.", "query_tokens", "ln_vision."))}
    blip2.update({"t5_proj.weight": torch.zeros(4, 64), "t5_proj.bias": torch.zeros(4)})
    torch.save({"model": blip2}, tmp_path / "blip2_pretrained_flant5xxl.pth")
    vl = {n: t for n, t in original.items() if n.startswith(VIDEO_PART)}
    torch.save({"model": vl}, tmp_path / "VL_tiny.pth")
    model = build(freeze_qformer=False, q_former_model=str(tmp_path / "blip2_pretrained_flant5xxl.pth"),
                  ckpt=str(tmp_path / "VL_tiny.pth"))
    assert model.Qformer.encoder.layer[0].attention.attention.query.weight.requires_grad
    with caplog.at_level(logging.INFO):
        sources = model.load_pretrained_parts()
    assert "t5_proj: 2" in caplog.text  # listed as unused, in one line
    state = model.state_dict()
    assert all(torch.equal(state[n], values[n]) for n in values if n.startswith(("Qformer.", "query_tokens", "ln_vision.")))
    assert all(torch.equal(state[n], values[n]) for n in values if n.startswith(VIDEO_PART))
    assert sources["Qformer.layernorm.weight"] == "model.q_former_model" and sources["llama_proj.weight"] == "model.ckpt"
    assert "visual_encoder" in caplog.text and "random" in caplog.text  # the start-up table names the ViT's origin


def test_a_frozen_module_no_file_fills_is_a_start_up_error(tmp_path):
    """Tiny model type (random by default): vit_ckpt: null with freeze_vit True names model.vit_ckpt,
    and the same for the Q-Former, before any video is read."""
    from video_llama.common.config import Config, ConfigError

    from conftest import TINY_CONFIG

    with pytest.raises(ConfigError) as err:
        Config.from_file(TINY_CONFIG, ["model.vit_ckpt=null", "model.q_former_model=null"])
    problems = err.value.problems
    assert any(p.startswith("model.freeze_vit is True but model.vit_ckpt is null") for p in problems)
    assert any("model.q_former_model is null" in p for p in problems)
    assert Config.from_file(TINY_CONFIG).model_cfg.vit_ckpt == "random"  # tiny's default: random on purpose


@pytest.mark.timeout(60)  # offline, nothing retries a download: seconds (a hang guard, not a timing)
def test_full_size_recipe_offline_names_the_first_file_it_needs_in_seconds(monkeypatch):
    from video_llama.common.config import Config, ConfigError, check_runtime

    from conftest import REPO_ROOT

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-torch-home")
    cfg = Config.from_file(REPO_ROOT / "train_configs" / "visionbranch_stage2_finetune.yaml", ["run.device=cpu"])
    with pytest.raises(ConfigError) as err:
        check_runtime(cfg.config)
    first = err.value.problems[0]
    assert first.startswith("model.ckpt:") or "eva_vit_g.pth is needed" in first, err.value.problems
    assert any("model.vit_ckpt: eva_vit_g.pth is needed" in p and "model.vit_ckpt=random" in p for p in err.value.problems)


def test_a_checkpoint_trained_on_the_older_text_ids_is_loaded_with_a_warning(tmp_path, caplog):
    """Checkpoints we wrote before prompts were tokenised as the original's (2026-12-06) carry no
    text-ids mark: they load, with a warning that names the run and the fix."""
    from video_llama.common.run_folder import RunFolder
    from video_llama.conversation.segment_encoding import TEXT_IDS, TEXT_IDS_KEY
    from video_llama.models.checkpoint import read_state_dict

    weights = {"llama_proj.weight": torch.ones(2, 2)}
    (tmp_path / "old_run").mkdir(), (tmp_path / "new_run").mkdir()
    old = RunFolder(tmp_path / "old_run").save_checkpoint("checkpoint_e1_s0", weights, {"epoch": 1}, "model: {}\n")
    new = RunFolder(tmp_path / "new_run").save_checkpoint("checkpoint_e1_s0", weights, {"epoch": 1}, "model: {}\n",
                          {TEXT_IDS_KEY: TEXT_IDS})
    with caplog.at_level("WARNING"):
        assert torch.equal(read_state_dict(tmp_path / "new_run", "model.ckpt")["llama_proj.weight"], torch.ones(2, 2))
        assert not caplog.records
        assert torch.equal(read_state_dict(tmp_path / "old_run", "model.ckpt")["llama_proj.weight"], torch.ones(2, 2))
    (warning,) = caplog.messages
    assert str(old) in warning and "retrain" in warning and str(new) not in warning


def test_a_run_folder_finds_its_checkpoints_best_and_calibration(tmp_path):
    from video_llama.common.errors import CheckpointError
    from video_llama.common.run_folder import RunFolder, checkpoint_in_use, resolve_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint_e1_s0", "checkpoint_e2_s0"):
        RunFolder(run).save_checkpoint(name, {"w": torch.zeros(1)}, {"epoch": 1}, "model: {}\n")
    assert RunFolder.of(run).checkpoint().name == "checkpoint_e2_s0"  # latest
    assert checkpoint_in_use(run).name == "checkpoint_e2_s0"  # no best recorded: the latest
    RunFolder(run).mark_best("checkpoint_e1_s0", {"val_top1": 0.75})
    assert checkpoint_in_use(run).name == "checkpoint_e1_s0" and RunFolder.of(run).best() == ("checkpoint_e1_s0", {"val_top1": 0.75})
    assert "the run's best (val_top1 0.75)" in RunFolder(run).describe(run / "checkpoint_e1_s0")
    assert RunFolder.of(run / "checkpoint_e2_s0").path == run  # a checkpoint folder knows its run
    assert RunFolder.of(run).calibration_path == run / "calibration.json"
    assert RunFolder.of(tmp_path) is None and checkpoint_in_use(tmp_path / "x.pth") == tmp_path / "x.pth"
    (run / "best").write_text("checkpoint_e9_s0\n")
    with pytest.raises(CheckpointError, match="names checkpoint_e9_s0, which is not a complete checkpoint"):
        resolve_checkpoint(run, prefer="best", key="model.ckpt")


def test_a_run_folder_is_created_afresh_and_keeps_its_newest_checkpoints(tmp_path):
    from video_llama.common.run_folder import RunFolder

    first, second = (RunFolder.create(tmp_path / "out", "job", "run: {seed: 1}\n") for _ in range(2))
    assert (first.path.name, second.path.name) == ("job", "job_1")  # never an earlier run's folder
    assert (second.path / "config.yaml").read_text() == "run: {seed: 1}\n"
    for name in ("checkpoint_e2_s0", "checkpoint_e10_s0", "checkpoint_e1_s5", "checkpoint_e1_s0"):
        first.save_checkpoint(name, {"w": torch.zeros(1)}, {}, "model: {}\n")
    assert [c.name for c in first.checkpoints()] == ["checkpoint_e1_s0", "checkpoint_e1_s5", "checkpoint_e2_s0",
                                                     "checkpoint_e10_s0"]  # by epoch and step, not by name
    assert first.prune_checkpoints(2, protect={"checkpoint_e1_s0"}) == ["checkpoint_e1_s5"]
    assert [c.name for c in first.checkpoints()] == ["checkpoint_e1_s0", "checkpoint_e2_s0", "checkpoint_e10_s0"]


def test_a_runs_own_labels_come_before_its_annotations(tmp_path):
    from video_llama.common.run_folder import RunFolder
    from video_llama.tasks.action_recognition import trained_labels

    anno = tmp_path / "anno"
    anno.mkdir()
    (anno / "labels.json").write_text(json.dumps({"labels": ["from_annotations"]}))
    run = RunFolder.create(tmp_path, "run", f"datasets: {{d: {{build_info: {{anno_dir: {anno / 'train.json'}}}}}}}\n")
    run.save_checkpoint("checkpoint_e1_s0", {"w": torch.zeros(1)}, {}, "model: {}\n")
    assert trained_labels(run.path) == ["from_annotations"]  # a run from before runs kept their labels
    run.write_labels(["rest", "wave"])
    assert run.labels() == ["rest", "wave"] and trained_labels(run.path / "checkpoint_e1_s0") == ["rest", "wave"]
