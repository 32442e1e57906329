from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

import video_llama  # noqa: F401  (registers the built-ins)
from video_llama.common.config import Config, ConfigError, check_runtime
from video_llama.common.hub import WeightsNotFoundError, resolve_pretrained
from video_llama.common.registry import registry

from conftest import DATA_DIR, REPO_ROOT

GUIDE_YAML = DATA_DIR / "guide_visionbranch_stage2_finetune.yaml"


def write_yaml(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def guide_dict():
    return yaml.safe_load(GUIDE_YAML.read_text())


def problems_of(path, options=None):
    with pytest.raises(ConfigError) as err:
        Config.from_file(path, options)
    return err.value.problems


def test_guide_yaml_loads_unchanged_with_all_keys():
    """Every key of the guide keeps its value, except the original's keys that change nothing here
    (accepted with those values and dropped)."""
    from video_llama.models.video_llama_config import LEGACY_KEYS as LEGACY_MODEL_KEYS

    raw = OmegaConf.load(GUIDE_YAML)
    cfg = Config.from_file(GUIDE_YAML)
    for section in ("model", "run"):
        for key, value in raw[section].items():
            if section == "model" and key in LEGACY_MODEL_KEYS:
                assert key not in cfg.config.model
                continue
            assert cfg.config[section][key] == value, f"{section}.{key}"
    assert cfg.model_cfg.template == "llama_v2"
    ds = cfg.datasets_cfg.webvid_instruct
    assert ds.build_info.anno_dir.endswith("videoaction_instruct_11k.json")
    assert ds.vis_processor.train.n_frms == 8 and ds.vis_processor.train.image_size == 224
    assert ds.text_processor.train.name == "blip_caption"
    assert ds.tokenizer_name == "meta-llama/Llama-2-7b-chat-hf" and ds.model_type == "llama_v2"


def test_merge_order_defaults_user_options(tmp_path):
    data = guide_dict()
    data["run"]["init_lr"] = 5e-5
    path = write_yaml(tmp_path, data)
    cfg = Config.from_file(path, ["run.init_lr=7e-5", "model.max_txt_len=99"])
    assert cfg.run_cfg.init_lr == 7e-5  # options beat the user YAML
    assert cfg.model_cfg.max_txt_len == 99
    assert cfg.run_cfg.accum_grad_iters == 1  # run default
    assert cfg.model_cfg.vit_depth == 39  # model default for pretrain_llama_v2
    assert cfg.datasets_cfg.webvid_instruct.vis_processor.train.min_scale == 0.5  # processor default
    assert cfg.datasets_cfg.webvid_instruct.vis_processor.eval.name == "alpro_video_eval"  # dataset default
    assert cfg.datasets_cfg.webvid_instruct.max_seq_len == 512  # instruction data: the original's cut


def test_model_type_override_changes_defaults(tmp_path):
    path = write_yaml(tmp_path, guide_dict())
    cfg = Config.from_file(path, ["model.model_type=tiny"])
    assert cfg.model_cfg.model_type == "tiny"
    assert cfg.model_cfg.vit_depth == 2 and cfg.model_cfg.vit_embed_dim == 64
    assert cfg.model_cfg.freeze_vit is True  # the user's key still wins over the tiny default
    assert cfg.model_cfg.llama_model == "meta-llama/Llama-2-7b-chat-hf"


def shipped_experiment_yamls():
    return sorted(p for folder in ("train_configs", "eval_configs") for p in (REPO_ROOT / folder).rglob("*.yaml"))


@pytest.mark.parametrize("path", shipped_experiment_yamls(), ids=lambda p: p.name)
def test_every_shipped_experiment_yaml_validates(path):
    """It loads, and says what its author wrote: every plain model and run value as in the file
    (paths are resolved, legacy model keys translated)."""
    from video_llama.models.video_llama_config import LEGACY_KEYS as LEGACY_MODEL_KEYS

    cfg = Config.from_file(path)
    written = OmegaConf.load(path)
    paths = {"ckpt", "vit_ckpt", "q_former_model", "llama_model", "prompt_path", "resume_ckpt_path"}
    checked = 0
    for section in ("model", "run"):
        for key, value in (written.get(section) or {}).items():
            if key in paths or key in LEGACY_MODEL_KEYS or isinstance(value, (dict, list)) or OmegaConf.is_config(value):
                continue
            assert cfg.config[section][key] == value, f"{section}.{key}"
            checked += 1
    assert checked >= 3


def test_default_yamls_are_consistent():
    base = OmegaConf.load(REPO_ROOT / "video_llama/configs/models/video_llama/base.yaml").model
    model_cls = registry.get_model_class("video_llama")
    for model_type in model_cls.PRETRAINED_MODEL_CONFIG_DICT:
        overlay = OmegaConf.load(model_cls.default_config_path(model_type)).model
        assert set(overlay) <= set(base), f"{model_type} sets keys the base does not document"
        assert overlay.model_type == model_type
    for name in registry.names("builder"):
        builder = registry.get_builder_class(name)
        top = OmegaConf.load(builder.default_config_path()).datasets
        assert list(top) == [name], f"{builder.default_config_path()} must be keyed by its registered name"
    all_yaml = list((REPO_ROOT / "video_llama/configs").rglob("*.yaml"))
    assert len(all_yaml) >= 6
    for path in all_yaml:
        assert isinstance(OmegaConf.load(path), OmegaConf.create({}).__class__)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d.update(modle=d.pop("model")), "modle: unknown key 'modle'; did you mean 'model'?"),
        (lambda d: d["model"].update(freez_vit=True), "model.freez_vit: unknown key 'freez_vit'; did you mean 'freeze_vit'?"),
        (lambda d: d["datasets"].update(webvid_instrct=d["datasets"].pop("webvid_instruct")), "Did you mean 'webvid_instruct'?"),
        (lambda d: d["datasets"]["webvid_instruct"].update(num_video_query_tokens=32), "did you mean 'num_video_query_token'?"),
        (lambda d: d["datasets"]["webvid_instruct"]["build_info"].update(video_dir="x"), "datasets.webvid_instruct.build_info.video_dir: unknown key 'video_dir'; did you mean 'videos_dir'?"),
        (lambda d: d["datasets"]["webvid_instruct"]["vis_processor"]["train"].update(n_frm=8), "datasets.webvid_instruct.vis_processor.train.n_frm: unknown key 'n_frm'; did you mean 'n_frms'?"),
        (lambda d: d["datasets"]["webvid_instruct"]["vis_processor"]["train"].update(name="alpro_video_trian"), "Did you mean 'alpro_video_train'?"),
        (lambda d: d["run"].update(max_epochs=3), "run.max_epochs: unknown key 'max_epochs'; did you mean 'max_epoch'?"),
        (lambda d: d["run"].update(lr_sched="linear_warmup_cosine"), "Did you mean 'linear_warmup_cosine_lr'?"),
        (lambda d: d["model"].update(model_type="pretrain_llama2"), "model.model_type: unknown value 'pretrain_llama2'; did you mean 'pretrain_llama_v2'?"),
        (lambda d: d["run"].update(batch_size_train="four"), "run.batch_size_train: expected a int"),
    ],
)
def test_misspelled_keys_suggest_the_right_one(tmp_path, edit, expected):
    data = guide_dict()
    edit(data)
    problems = problems_of(write_yaml(tmp_path, data))
    assert any(expected in p for p in problems), problems


def test_all_problems_reported_at_once(tmp_path):
    data = guide_dict()
    data["model"]["freez_vit"] = True
    data["run"]["max_epochs"] = 3
    data["datasets"]["webvid_instruct"]["vis_processor"]["train"]["n_frm"] = 8
    problems = problems_of(write_yaml(tmp_path, data), ["run.warmup_step=5"])
    assert len(problems) == 4
    assert any(p.startswith("run.warmup_step:") and "warmup_steps" in p for p in problems)


def test_options_must_be_key_value(tmp_path):
    problems = problems_of(write_yaml(tmp_path, guide_dict()), ["run.init_lr"])
    assert "not key=value" in problems[0]


@pytest.mark.parametrize(
    "options, both_keys",
    [
        (["datasets.webvid_instruct.model_type=vicuna"], ("datasets.webvid_instruct.model_type", "model.template")),
        (["model.end_sym=###", "model.prompt_template='###Human: {} ###Assistant: '"], ("model.end_sym", "model.template")),
        (["model.prompt_template='###Human: {} ###Assistant: '"], ("model.prompt_template", "model.template")),
        (["model.freeze_llm=False"], ("model.freeze_llm", "model.llama_dtype")),
        (["datasets.webvid_instruct.num_video_query_token=16"], ("datasets.webvid_instruct.num_video_query_token", "model.num_video_query_token")),
        (["datasets.webvid_instruct.vis_processor.train.image_size=112"], ("vis_processor.train.image_size", "model.img_size")),
        (["datasets.webvid_instruct.vis_processor.train.n_frms=64"], ("vis_processor.train.n_frms", "model.max_frame_pos")),
        (["model.freeze_vit=False"], ("model.freeze_vit", "model.vit_precision")),
        (["datasets.webvid_instruct.vis_processor.train.motion_channels=True"], ("vis_processor.train.motion_channels", "model.freeze_vit")),
        (["datasets.webvid_instruct.vis_processor.train.still_suppression=0.5"],
         ("vis_processor.train.still_suppression", "vis_processor.eval.still_suppression")),
        (["run.strategy=fsdp", "run.amp_dtype=fp16"], ("run.strategy", "run.amp_dtype")),
        (["run.strategy=fdsp"], ("run.strategy", "did you mean 'fsdp'")),
        (["run.strategy=fsdp", "datasets.webvid_instruct.sound=True"], ("datasets.webvid_instruct.sound", "run.strategy=fsdp")),
    ],
)
def test_consistency_checks_name_both_keys(tmp_path, options, both_keys):
    problems = problems_of(write_yaml(tmp_path, guide_dict()), options)
    assert any(all(k in p for k in both_keys) for p in problems), problems


def test_train_and_eval_processors_may_differ_when_nothing_trains(tmp_path):
    """Validation must see the frames training makes; a config that only uses a trained model (its
    evaluation takes the run's values) is not held to the train processor it does not use."""
    options = ["datasets.webvid_instruct.vis_processor.train.still_suppression=0.5"]
    cfg = Config.from_file(write_yaml(tmp_path, guide_dict()), options, trained_model=True)
    assert cfg.datasets_cfg.webvid_instruct.vis_processor.train.still_suppression == 0.5
    agreeing = options + ["datasets.webvid_instruct.vis_processor.eval.still_suppression=0.5"]
    assert Config.from_file(write_yaml(tmp_path, guide_dict()), agreeing).datasets_cfg.webvid_instruct.vis_processor.eval.still_suppression == 0.5


def test_vicuna_pair_is_consistent(tmp_path):
    cfg = Config.from_file(
        write_yaml(tmp_path, guide_dict()),
        ["model.model_type=pretrain_vicuna", "model.end_sym=###", "model.prompt_template='###Human: {} ###Assistant: '",
         "datasets.webvid_instruct.model_type=vicuna"],
    )
    assert cfg.model_cfg.end_sym == "###" and cfg.model_cfg.template == "vicuna"


def test_tokenizer_name_defaults_to_llama_model(tmp_path):
    data = guide_dict()
    del data["datasets"]["webvid_instruct"]["tokenizer_name"]
    cfg = Config.from_file(write_yaml(tmp_path, data), ["model.llama_model=/models/my-llama"])
    assert cfg.datasets_cfg.webvid_instruct.tokenizer_name == "/models/my-llama"


def test_cuda_without_gpu_says_set_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = Config.from_file(GUIDE_YAML)
    with pytest.raises(ConfigError, match=r"set run.device=cpu"):
        check_runtime(cfg.config)
    check_runtime(Config.from_file(GUIDE_YAML, ["run.device=cpu", "model.ckpt=null", "model.vit_ckpt=random",
                                                "model.q_former_model=random"]).config)


def test_relative_paths_resolve_against_config_folder_and_package(tmp_path, monkeypatch):
    exp_dir = tmp_path / "exp"
    (exp_dir / "data").mkdir(parents=True)
    (exp_dir / "data" / "train.json").write_text("[]")
    data = guide_dict()
    data["datasets"]["webvid_instruct"]["build_info"] = {"anno_dir": ["data/train.json"], "videos_dir": "data"}
    path = write_yaml(exp_dir, data)
    monkeypatch.chdir(tmp_path)  # neither the config's folder nor the repository
    cfg = Config.from_file(path)
    info = cfg.datasets_cfg.webvid_instruct.build_info
    assert info.anno_dir == [str((exp_dir / "data" / "train.json").resolve())]
    assert info.videos_dir == str((exp_dir / "data").resolve())
    prompt = Path(cfg.model_cfg.prompt_path)
    assert prompt.is_file() and prompt.name == "alignment_image.txt"  # shipped with the package


@pytest.mark.timeout(60)  # offline: no download is retried (a hang guard, not a timing)
def test_hub_id_offline_fails_fast_with_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_pretrained("meta-llama/Llama-2-7b-chat-hf", "model.llama_model")
    message = str(err.value)
    assert "model.llama_model" in message and "HF_HUB_OFFLINE" in message and "--options model.llama_model=" in message


def test_hub_id_found_in_local_cache(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    found = resolve_pretrained("org/tiny", "model.llama_model")
    assert Path(found) == snapshot


def test_local_folder_missing_names_key():
    with pytest.raises(WeightsNotFoundError, match="model.llama_model"):
        resolve_pretrained("./ckpt/llama-2-7b-chat-hf", "model.llama_model")


def test_processor_image_size_follows_model_unless_set(tmp_path):
    data = guide_dict()
    del data["datasets"]["webvid_instruct"]["vis_processor"]["train"]["image_size"]
    cfg = Config.from_file(write_yaml(tmp_path, data), ["model.model_type=tiny", "model.img_size=112"])
    procs = cfg.datasets_cfg.webvid_instruct.vis_processor
    assert procs.train.image_size == 112 and procs.eval.image_size == 112
    problems = problems_of(write_yaml(tmp_path, guide_dict()), ["model.img_size=112"])  # the guide sets 224
    assert any("vis_processor.train.image_size (224) must equal model.img_size (112)" in p for p in problems)


@pytest.mark.parametrize(
    "options, expected",
    [
        (["model.llm_load_in_8bit=True", "model.llm_load_in_4bit=True"], "are both True; choose one"),
        (["model.lora.r=8", "model.freeze_llm=False", "model.llama_dtype=fp32"], "LoRA trains adapters beside a frozen LLM"),
        (["model.lora.rank=8"], "model.lora.rank: unknown key"),
        (["model.equip_audio_branch=True"], "model.imagebind_ckpt_path is null: the frozen ImageBind towers would stay random"),
        (["model.ckpt_2=al.pth"], "model.ckpt_2 (al.pth) is an audio-branch checkpoint but model.equip_audio_branch is False"),
        (["model.equip_audio_branch=True", "model.imagebind_ckpt_path=random", "model.frozen_video_Qformer=True",
          "model.frozen_audio_Qformer=False", "datasets.webvid_instruct.vis_processor.train.n_frms=16"],
         "n_frms (16) exceeds the audio branch's 8 positions"),
        (["model.equip_audio_branch=True", "model.imagebind_ckpt_path=random", "model.frozen_video_Qformer=True",
          "model.frozen_audio_Qformer=False", "datasets.webvid_instruct.feature_cache=features"],
         "feature_cache holds the image Q-Former's features, but the frames feed the audio branch"),
        (["datasets.webvid_instruct.sound=True"], "datasets.webvid_instruct.sound is True but model.equip_audio_branch is False"),
        (["model.vit_model=eva_vit_l"], "model.vit_model: 'eva_vit_l' is not available"),
        (["datasets.webvid_instruct.data_type=images"], "datasets.webvid_instruct.data_type: 'images', but the webvid_instruct builder reads video"),
        (["run.eval_mode=rnk"], "run.eval_mode: unknown value 'rnk'; did you mean 'rank'?"),
        (["run.valid_splits=val"], "run.valid_splits: must be a list of split names, e.g. [val]"),
        (["model.template=vicunna"], "model.template: Unknown prompt template 'vicunna'. Did you mean 'vicuna'?"),
        (["run.valid_splits=[val]"], "run.valid_splits names split 'val', which no dataset has"),
        (["run.test_splits=[test]"], "or remove it from run.test_splits"),
    ],
)
def test_settings_that_cannot_work_fail_at_start_up(tmp_path, options, expected):
    problems = problems_of(write_yaml(tmp_path, guide_dict()), options)
    assert any(expected in p for p in problems), problems


def test_original_keys_with_the_values_we_honour_are_accepted(tmp_path):
    cfg = Config.from_file(write_yaml(tmp_path, guide_dict()), ["model.low_resource=False", "model.fusion_head_layers=2"])
    assert "low_resource" not in cfg.model_cfg and "fusion_head_layers" not in cfg.model_cfg


def test_split_names_come_from_the_annotation_layout(tmp_path):
    """A {split: file} mapping or a `prepare` folder gives the splits that valid_splits may name."""
    folder = tmp_path / "anno"
    folder.mkdir()
    for split in ("train", "val"):
        (folder / f"{split}.json").write_text("[]")
    data = guide_dict()
    data["datasets"]["webvid_instruct"]["build_info"]["anno_dir"] = str(folder)
    cfg = Config.from_file(write_yaml(tmp_path, data), ["run.valid_splits=[val]"])
    assert cfg.run_cfg.valid_splits == ["val"]
    problems = problems_of(write_yaml(tmp_path, data), ["run.valid_splits=[test]"])
    assert "'webvid_instruct': ['train', 'val']" in problems[0]
    # the fix it suggests keeps the splits the dataset has and adds the missing one
    assert 'anno_dir="{train: TRAIN.json, val: VAL.json, test: TEST.json}"' in problems[0]
    data["datasets"]["webvid_instruct"]["build_info"]["anno_dir"] = {"train": "a.json", "dev": "b.json"}
    assert Config.from_file(write_yaml(tmp_path, data), ["run.valid_splits=[dev]"]).run_cfg.valid_splits == ["dev"]


def test_a_mapping_in_options_replaces_the_yamls(tmp_path):
    """anno_dir={train: X} on the command line means X alone, not X plus the YAML's val."""
    data = guide_dict()
    data["datasets"]["webvid_instruct"]["build_info"]["anno_dir"] = {"train": "a.json", "val": "b.json"}
    cfg = Config.from_file(write_yaml(tmp_path, data), ["datasets.webvid_instruct.build_info.anno_dir={train: c.json}"])
    assert list(cfg.datasets_cfg.webvid_instruct.build_info.anno_dir) == ["train"]


def test_a_trained_run_brings_its_model_section(tmp_path, caplog):
    """Evaluation, calibration, chat and select-mode rebuild the model a run trained: a YAML with
    only ``model.ckpt`` suffices, one that restates the model differently is told so and not
    obeyed, except for the keys of where files are and how the model loads."""
    import logging

    from conftest import TINY_CONFIG

    trained = Config.from_file(TINY_CONFIG, ["model.num_video_query_token=4", "datasets.webvid_instruct.num_video_query_token=4"])
    run = tmp_path / "run"
    checkpoint = run / "checkpoint_e1_s0"
    checkpoint.mkdir(parents=True)
    for name in ("model.safetensors", "training_state.pt"):
        (checkpoint / name).write_bytes(b"")
    (checkpoint / "config.yaml").write_text(trained.to_yaml())
    (run / "latest").write_text("checkpoint_e1_s0\n")
    evaluation = {"model": {"ckpt": str(run)}, "run": {"task": "action_recognition"},
                  "datasets": {"webvid_instruct": {"build_info": {"anno_dir": "anno.json", "videos_dir": "videos"}}}}
    path = write_yaml(tmp_path, evaluation)

    cfg = Config.from_file(path, trained_model=True)
    assert cfg.model_cfg.model_type == "tiny" and cfg.model_cfg.num_video_query_token == 4
    assert cfg.datasets_cfg.webvid_instruct.num_video_query_token == 4  # follows the model
    assert cfg.model_cfg.img_size == trained.model_cfg.img_size

    with caplog.at_level(logging.WARNING):
        cfg = Config.from_file(path, ["model.num_video_query_token=32", "model.llama_model=elsewhere/llm",
                                      "datasets.webvid_instruct.num_video_query_token=32"], trained_model=True)
    assert cfg.model_cfg.num_video_query_token == 4 and cfg.datasets_cfg.webvid_instruct.num_video_query_token == 4
    assert cfg.model_cfg.llama_model == "elsewhere/llm"  # where the files are is the user's to say
    assert "model.num_video_query_token: 32 (the run's: 4)" in caplog.text
    assert cfg.model_cfg.ckpt == str(run)

    untouched = Config.from_file(path)  # training from a run's weights keeps the YAML's model (a new stage)
    assert untouched.model_cfg.model_type == "pretrain_llama_v2"


def test_an_evaluation_sees_frames_as_the_run_was_trained_to_see_them(tiny_llm_dir, clips_dir, tmp_path, caplog):
    """The eval processor's pixel keys (per-clip normalisation, still suppression, motion channels)
    follow the trained run: left out of the evaluation YAML they are the run's, and a differing value
    is ignored, said once; a key the run's config predates takes the processor's default."""
    import logging

    from video_llama.common.config import Config
    from video_llama.jobs.experiment import train

    from conftest import TINY_CONFIG

    proc = "datasets.webvid_instruct.vis_processor"
    run = train(["--cfg-path", str(TINY_CONFIG), "--options", f"model.llama_model={tiny_llm_dir}",
                 f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
                 f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
                 f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}", "run.max_epoch=1", "run.iters_per_epoch=1",
                 f"run.output_dir={tmp_path / 'runs'}", f"{proc}.train.still_suppression=0.7",
                 f"{proc}.eval.still_suppression=0.7", f"{proc}.train.per_clip_norm=True", f"{proc}.eval.per_clip_norm=True",
                 f"{proc}.train.motion_channels=True", f"{proc}.eval.motion_channels=True", "model.freeze_vit=False",
                 "model.vit_precision=fp32"])["run_dir"]
    evaluation = REPO_ROOT / "eval_configs" / "quickstart_stream_tiny.yaml"
    with caplog.at_level(logging.WARNING):
        cfg = Config.from_file(evaluation, [f"model.ckpt={run}", f"{proc}.eval.still_suppression=0.2",
                                            f"{proc}.eval.motion_channels=False"], trained_model=True)
    eval_proc = cfg.datasets_cfg.webvid_instruct.vis_processor.eval
    assert eval_proc.still_suppression == 0.7 and eval_proc.per_clip_norm is True and eval_proc.motion_channels is True
    assert "vis_processor.eval.still_suppression: 0.2 (the run's: 0.7)" in caplog.text
    assert "vis_processor.eval.motion_channels: False (the run's: True)" in caplog.text

    for saved in Path(run).rglob("config.yaml"):  # a run written before motion_channels existed saw colour frames
        saved.write_text("\n".join(line for line in saved.read_text().splitlines() if "motion_channels" not in line))
    older = Config.from_file(evaluation, [f"model.ckpt={run}", f"{proc}.eval.motion_channels=True"], trained_model=True)
    assert older.datasets_cfg.webvid_instruct.vis_processor.eval.motion_channels is False
