"""The memory planner: one training step on fake tensors, against a real step on the CPU."""

import pytest

from conftest import REPO_ROOT, benchmark, tiny_config


def plan_accuracy():
    """benchmarks/plan_accuracy.py, whose real-step measurement (the allocator's events) the tests share."""
    return benchmark("plan_accuracy")


@pytest.fixture(scope="module")
def tiny_experiment(tiny_llm_dir, clips_dir):
    return tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir, "datasets.webvid_instruct.max_seq_len=128")


@pytest.mark.parametrize("options", [
    (),  # the guide's split: frozen encoders and LLM
    ("model.freeze_llm=False", "model.freeze_vit=False", "model.vit_precision=fp32"),  # everything trains
    ("model.llm_grad_checkpoint=True",),  # the LLM's layers recomputed in backward
    ("datasets.webvid_instruct.feature_cache=anywhere",),  # the frozen encoders released (the folder is not read)
])
def test_the_planned_peak_is_what_the_allocator_records_for_a_real_step(tiny_llm_dir, clips_dir, options):
    from omegaconf import OmegaConf

    from video_llama.jobs.plan import plan_step, setting_of

    cfg = tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir, "datasets.webvid_instruct.max_seq_len=128",
                      *options)
    setting = setting_of(cfg)
    planned = plan_step(cfg, setting, gpu=False)
    measured, _ = plan_accuracy().measured_step(cfg, setting)
    assert planned.peak == pytest.approx(measured, rel=0.10)
    # the parts the plan names are the model's own
    model_cfg = OmegaConf.to_container(cfg.model_cfg)
    assert planned.gradients == pytest.approx(4 * planned.trainable, rel=0.01)  # fp32 gradients of what trains
    assert 2 * 4 * planned.trainable <= planned.optimizer_state <= 2 * 4 * planned.trainable + 4096  # AdamW's moments, steps
    assert planned.activations_at_peak > 0 and planned.peak > planned.parameters + planned.batch
    assert (planned.trainable > planned.parameters / 4 / 2) == (model_cfg["freeze_llm"] is False)  # most of it trains


def test_more_frames_or_samples_need_more_memory_and_checkpointing_less(tiny_llm_dir, clips_dir):
    import dataclasses

    from video_llama.jobs.plan import plan_step, setting_of

    # long sequences, few frames: the LLM's activations are most of the peak
    tiny_experiment = tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir,
                                  "datasets.webvid_instruct.vis_processor.train.n_frms=2")
    base = setting_of(tiny_experiment)
    plans = {name: plan_step(tiny_experiment, dataclasses.replace(base, **change), gpu=False) for name, change in {
        "base": {}, "batch": {"batch": 2 * base.batch}, "frames": {"frames": 2 * base.frames},
        "checkpointed": {"llm_grad_checkpoint": True}, "eager": {"attn_implementation": "eager"}}.items()}
    assert plans["batch"].peak > plans["base"].peak and plans["frames"].peak > plans["base"].peak
    assert plans["batch"].flops == pytest.approx(2 * plans["base"].flops, rel=0.01)  # FLOPs per sample are fixed
    assert plans["checkpointed"].activations_at_peak < plans["base"].activations_at_peak
    assert plans["checkpointed"].flops > plans["base"].flops  # the forward again, in backward
    assert plans["eager"].activations_at_peak > plans["base"].activations_at_peak  # attention matrices kept


def test_the_planned_flops_of_the_llm_layers_are_their_matmuls(tiny_llm_dir, tmp_path):
    bench = plan_accuracy()
    from video_llama.jobs.plan import data_shape, plan_step, setting_of
    from video_llama.models.llm_shapes import llm_config

    config, _ = llm_config(tiny_llm_dir)
    cfg = bench.experiment(tiny_llm_dir, [], 2)
    layerless = bench.write_llm_config(tmp_path / "layerless", {**bench.shape_of(config), "num_hidden_layers": 0})
    setting = setting_of(cfg)
    layers = plan_step(cfg, setting, gpu=False).flops - plan_step(bench.experiment(layerless, [], 2), setting, gpu=False).flops
    analytic = bench.decoder_layers_flops(config, setting.batch, data_shape(cfg).seq_len, trains_weights=False,
                                          recomputes=False)
    assert layers == pytest.approx(analytic, rel=0.02)


def test_a_gpu_plan_keeps_the_vit_in_fp16_and_rounds_to_the_allocators_blocks(tiny_experiment):
    from video_llama.jobs.plan import plan_step, setting_of

    cpu = plan_step(tiny_experiment, setting_of(tiny_experiment), gpu=False)
    gpu = plan_step(tiny_experiment, setting_of(tiny_experiment), gpu=True)  # tiny.yaml: vit_precision fp32
    assert gpu.parameters >= cpu.parameters and gpu.parameters % 512 == 0
    from video_llama.common.config import Config

    half = Config.from_file(str(REPO_ROOT / "train_configs" / "tiny_cpu_finetune.yaml"),
                            [f"model.llama_model={tiny_experiment.model_cfg.llama_model}", "model.vit_precision=fp16",
                             f"datasets.webvid_instruct.tokenizer_name={tiny_experiment.model_cfg.llama_model}",
                             "datasets.webvid_instruct.max_seq_len=128"])
    assert plan_step(half, setting_of(half), gpu=True).parameters < gpu.parameters  # the ViT in half the bytes


def test_plan_command_says_whether_it_fits(tiny_llm_dir, capsys):
    from video_llama.cli.plan import main

    options = ["--cfg-path", str(REPO_ROOT / "train_configs" / "tiny_cpu_finetune.yaml"), "--options",
               f"model.llama_model={tiny_llm_dir}", f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}"]
    assert main([*options, "--gpu-memory", "1MiB"]) == 0
    out = capsys.readouterr().out
    assert "| **peak** |" in out and "does NOT fit in 0.0 GiB" in out and "TFLOP" in out
    main([*options, "--gpu-memory", "80GB"])
    assert "fits in 80.0 GiB" in capsys.readouterr().out


def test_sizes_and_llm_shapes_without_files():
    from video_llama.common.errors import UserError
    from video_llama.jobs.plan import GIB, parse_bytes
    from video_llama.models.llm_shapes import llm_config

    assert parse_bytes("24GiB") == 24 * GIB == parse_bytes("24 GB") == parse_bytes("24")
    assert parse_bytes("512MiB") == GIB // 2
    with pytest.raises(UserError, match="--gpu-memory"):
        parse_bytes("lots")
    config, source = llm_config("meta-llama/Llama-2-13b-chat-hf")
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (5120, 40, 32000)
    assert "13B" in source
    assert llm_config("/nowhere/vicuna-7b-v0")[0].hidden_size == 4096
    with pytest.raises(UserError, match="config.json"):
        llm_config("/nowhere/Qwen2-7B")  # 7B, but not LLaMA's shape
    with pytest.raises(UserError, match="config.json"):
        llm_config("/nowhere/my-model")


def test_the_7b_stage_2_recipe_plans_without_weights():
    """The guide's full-size recipe on a machine without its files: the published shapes."""
    from video_llama.common.config import Config
    from video_llama.jobs.plan import GIB, plan_step, setting_of

    cfg = Config.from_file(str(REPO_ROOT / "train_configs" / "visionbranch_stage2_finetune.yaml"),
                           ["run.batch_size_train=1", "datasets.webvid_instruct.max_seq_len=64"])
    plan = plan_step(cfg, setting_of(cfg), gpu=True)
    assert plan.trainable == 22_104_064  # the published VL checkpoint's trainable part
    assert 14.5 * GIB < plan.parameters < 15.2 * GIB  # ViT-g fp16 + Q-Former fp32 + LLaMA-2-7B bf16
    assert plan.peak > plan.parameters + plan.gradients + plan.optimizer_state


def test_training_warns_at_start_up_when_the_step_will_not_fit(tiny_experiment, caplog):
    from video_llama.common.dist_utils import DistInfo
    from video_llama.jobs.experiment import check_memory
    from video_llama.jobs.plan import GIB, startup_memory_check

    with caplog.at_level("WARNING"):
        warning = startup_memory_check(tiny_experiment, 8 * 2 ** 20)  # 8 MiB: the tiny step needs more
    assert "will probably run out of GPU memory" in warning and "does NOT fit in 0.0 GiB" in warning
    assert "fits with --options" in warning or "nothing the planner tries fits" in warning
    assert warning in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert startup_memory_check(tiny_experiment, 80 * GIB) is None
    assert not caplog.records
    assert check_memory(tiny_experiment, DistInfo(device="cpu")) is None  # nothing to plan for on the CPU


def test_the_settings_that_would_fit_keep_the_effective_batch(tiny_experiment):
    import dataclasses

    from video_llama.jobs.plan import cheaper_settings, setting_of

    base = dataclasses.replace(setting_of(tiny_experiment), batch=8, frames=16)
    tried = cheaper_settings(base)
    assert tried[0] == dataclasses.replace(base, llm_grad_checkpoint=True)  # first what keeps the results
    assert [s.batch for s in tried[1:4]] == [4, 2, 1] and tried[-1].frames == 4
    written = setting_of(tiny_experiment)  # batch 2, accum 1
    options = dataclasses.replace(written, batch=1, llm_grad_checkpoint=True).options(tiny_experiment)
    assert options == ["run.batch_size_train=1", "run.accum_grad_iters=2", "run.warmup_steps=4", "run.iters_per_epoch=20",
                       "model.llm_grad_checkpoint=True"]  # the same samples per optimizer step, epoch and warmup


def test_a_step_from_the_feature_cache_skips_the_frozen_encoders(tiny_llm_dir, clips_dir):
    from video_llama.jobs.plan import plan_step, setting_of

    options = (tiny_llm_dir, clips_dir / "train.json", clips_dir, "datasets.webvid_instruct.max_seq_len=128")
    pixels = setting_of(tiny_config(*options))
    cached_cfg = tiny_config(*options, "datasets.webvid_instruct.feature_cache=anywhere")  # the folder is not read
    cached_setting = setting_of(cached_cfg)
    assert not pixels.features and cached_setting.features
    from_pixels = plan_step(tiny_config(*options), pixels, gpu=True)
    cached = plan_step(cached_cfg, cached_setting, gpu=True)  # no validation: the runner releases the encoders
    anno = f"{{train: {clips_dir / 'train.json'}, val: {clips_dir / 'train.json'}}}"
    validated = tiny_config(tiny_llm_dir, anno, *options[2:], "datasets.webvid_instruct.feature_cache=anywhere",
                            "run.valid_splits=[val]")
    kept = plan_step(validated, cached_setting, gpu=True)  # validation from pixels: they stay, idle
    assert cached.flops < from_pixels.flops and cached.batch < from_pixels.batch  # no ViT, fp16 features, no frames
    assert from_pixels.idle == 0 == cached.idle < kept.idle < kept.parameters
    assert kept.parameters == from_pixels.parameters == cached.parameters + kept.idle
    assert cached.peak == kept.peak - kept.idle and cached.trainable == from_pixels.trainable


def test_the_grid_gives_the_most_samples_that_fit_for_each_setting(tiny_experiment):
    import dataclasses

    from video_llama.jobs.plan import fits, grid, plan_step, setting_of

    lines = grid(tiny_experiment, 64 * 2 ** 20, gpu=False, frames=(2,))
    rows = [line.split("|")[1:-1] for line in lines[2:]]
    assert [r[1].strip() for r in rows][:4] == ["as written", "LLM checkpointing", "LoRA r=8", "LoRA r=8, checkpointing"]
    assert "4-bit LLM" in rows[-1][1] and "estimated" in rows[-1][1]
    most = {r[1].strip(): int(r[4]) for r in rows}
    assert most["LLM checkpointing"] >= most["as written"] >= 2  # recomputing frees room for samples
    # the most that fit: one sample more does not
    two_frames = dataclasses.replace(setting_of(tiny_experiment), frames=2)
    for name, change in (("as written", {}), ("LoRA r=8, checkpointing", {"lora_r": 8, "llm_grad_checkpoint": True})):
        n = most[name]
        fitting, over = (plan_step(tiny_experiment, dataclasses.replace(two_frames, batch=b, **change), gpu=False)
                         for b in (n, n + 1))
        assert fits(fitting, 64 * 2 ** 20) and not fits(over, 64 * 2 ** 20)


def test_low_bit_llms_and_fsdp_are_estimated_from_the_simulated_step(tiny_experiment, tiny_llm_dir):
    import dataclasses

    from transformers import AutoConfig

    from video_llama.jobs.plan import meta_model, model_config, plan_step, setting_of, shapes_of

    base = setting_of(tiny_experiment)
    step = plan_step(tiny_experiment, base, gpu=True)
    # what bitsandbytes quantises, counted from the LLM's config.json: q, k, v, o and the three MLP matrices
    llm = AutoConfig.from_pretrained(tiny_llm_dir)
    head_dim = llm.hidden_size // llm.num_attention_heads
    per_layer = (2 * llm.hidden_size * llm.hidden_size + 2 * llm.hidden_size * llm.num_key_value_heads * head_dim
                 + 3 * llm.hidden_size * llm.intermediate_size)
    weights = llm.num_hidden_layers * per_layer
    shapes = shapes_of(meta_model(model_config(tiny_experiment, base), gpu=True))
    assert shapes.llm_linear_weights == weights and shapes.llm_linear_bytes == 4 * weights  # fp32 (llama_dtype)
    assert step.estimated == ""
    eight, four = (plan_step(tiny_experiment, dataclasses.replace(base, low_bit=bits), gpu=True) for bits in (8, 4))
    # one byte a weight in 8 bits (4 - 1 saved), about half a byte in 4 bits (NF4 with its scales)
    assert step.parameters - eight.parameters == 3 * weights
    assert 3.45 * weights < step.parameters - four.parameters < 3.5 * weights
    assert "4 bits" in four.estimated and step.peak > eight.peak > four.peak
    largest = 4 * llm.hidden_size * max(llm.hidden_size, llm.intermediate_size)  # fp32 bytes of one weight matrix
    for planned in (eight, four):  # the weights' saving, less one weight dequantised for its matmul
        assert 0 < planned.peak - (step.peak - (step.parameters - planned.parameters)) <= largest
    per_gpu = [plan_step(tiny_experiment, dataclasses.replace(base, fsdp_gpus=n), gpu=True).peak for n in (2, 8)]
    assert step.peak > per_gpu[0] > per_gpu[1]


def test_the_plan_takes_the_largest_sample_of_every_dataset(tiny_llm_dir, clips_dir):
    import dataclasses

    from video_llama.jobs.plan import data_shape, setting_of

    cfg = tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir,
                      "datasets.webvid_instruct.vis_processor.train.n_frms=6", "datasets.webvid_instruct.max_seq_len=200")
    assert (data_shape(cfg).frames, data_shape(cfg).seq_len) == (6, 200)
    fewer = dataclasses.replace(setting_of(cfg), frames=3).options(cfg)
    assert fewer == ["datasets.webvid_instruct.vis_processor.train.n_frms=3",
                     "datasets.webvid_instruct.vis_processor.eval.n_frms=3"]  # what trains and what validates, alike
