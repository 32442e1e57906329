"""Plugins from an installed entry point, from a file named in the YAML, and their errors."""

import os
import subprocess
import sys

import pytest
import yaml

from video_llama.common.plugins import PluginError, load_plugin

from conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "plugin_example"
PLUGIN_FILE = EXAMPLE / "video_llama_csv_plugin" / "csv_actions.py"


@pytest.fixture(scope="module")
def csv_data(clips_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("csv")
    rows = "".join(f"clip{i}.mp4,{['wave', 'wipe'][i % 2]}\n" for i in range(4))
    (root / "train.csv").write_text("path,label\n" + rows)
    return root


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """The example package installed with pip (into a target folder put on PYTHONPATH)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True, timeout=300)
    return target


def run(args, env_extra, cwd=REPO_ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env_extra}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def train_args(cfg, llm, csv_data, clips_dir, out):
    return ["train.py", "--cfg-path", str(cfg), "--options", f"model.llama_model={llm}",
            f"datasets.csv_actions.tokenizer_name={llm}", f"datasets.csv_actions.build_info.anno_dir={csv_data / 'train.csv'}",
            f"datasets.csv_actions.build_info.videos_dir={clips_dir}", f"run.output_dir={out}"]


def check_run(result, out):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = out.iterdir()
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    ds = resolved["datasets"]["csv_actions"]
    assert ds["question"] == "What is the action shown in the displayed video?"  # from the plugin's YAML
    assert ds["vis_processor"]["train"]["name"] == "gray_video_train" and ds["vis_processor"]["train"]["keep_color_share"] == 0.25
    assert (run_dir / "summary.json").is_file()


@pytest.mark.slow
def test_installed_plugin_via_entry_point(installed_plugin, tiny_llm_dir, csv_data, clips_dir, tmp_path):
    env = {"PYTHONPATH": str(installed_plugin)}
    out = tmp_path / "out"
    result = run(train_args(EXAMPLE / "train_csv_tiny.yaml", tiny_llm_dir, csv_data, clips_dir, out), env)
    check_run(result, out)
    listing = run(["-m", "video_llama.cli.main", "list"], env)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines() if line.startswith("  ")}
    assert "plugin csv_actions" in lines["csv_actions"] and "plugin csv_actions" in lines["gray_video_train"]
    assert "built-in" in lines["webvid_instruct"]


@pytest.mark.slow
def test_plugin_file_named_in_yaml(tiny_llm_dir, csv_data, clips_dir, tmp_path):
    cfg = yaml.safe_load((EXAMPLE / "train_csv_tiny.yaml").read_text())
    cfg["plugins"] = [str(PLUGIN_FILE)]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    result = run(train_args(path, tiny_llm_dir, csv_data, clips_dir, out), {"VIDEO_LLAMA_NO_ENTRY_POINTS": "1"})
    check_run(result, out)
    assert "Unknown dataset builder" not in result.stderr


def test_plugin_that_fails_to_import_names_plugin_and_cause(tmp_path):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("import not_a_module_anywhere\n")
    with pytest.raises(PluginError, match=r"plugin '.*broken_plugin.py' \(from plugins: in x.yaml\) failed to import: "
                                          r"ModuleNotFoundError: No module named 'not_a_module_anywhere'"):
        load_plugin(str(bad), "plugins: in x.yaml")
    with pytest.raises(PluginError, match="no such file"):
        load_plugin(str(tmp_path / "missing.py"), "--plugins")


def test_plugin_reusing_a_taken_name_names_both_owners(tmp_path):
    clash = tmp_path / "clash_plugin.py"
    clash.write_text(
        "from video_llama.common.registry import registry\n"
        "@registry.register_builder('webvid')\n"
        "class MyWebvid:\n    pass\n"
    )
    import video_llama  # noqa: F401

    with pytest.raises(PluginError) as err:
        load_plugin(str(clash), "--plugins", name="clash")
    message = str(err.value)
    assert "video_builders.WebvidBuilder (from built-in)" in message and "MyWebvid (from plugin clash)" in message


PORTED_PLUGIN = '''
"""Code written as for LAVIS: a processor that overrides __call__ and returns the tensor, and a
builder whose dataset is a plain torch Dataset."""
from pathlib import Path

import torch

from video_llama.common.registry import registry
from video_llama.conversation import conversation_ids, get_template, load_tokenizer, video_placeholder
from video_llama.datasets.builders.base_builder import BaseDatasetBuilder
from video_llama.processors.video_decoding import load_video
from video_llama.processors.video_processors import AlproVideoEvalProcessor

CALLS = {"processor": 0, "plain": 0}


@registry.register_processor("lavis_style_video")
class LavisStyleVideo(AlproVideoEvalProcessor):
    def __call__(self, vpath):
        CALLS["processor"] += 1
        size = self.config.image_size
        return load_video(vpath, self.config.n_frms, size, size).frames.float() / 255.0


class PlainShapes(torch.utils.data.Dataset):
    def __init__(self, tokenizer, size):
        self.tokenizer, self.size = tokenizer, size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        CALLS["plain"] += 1
        ids, labels = conversation_ids(self.tokenizer, get_template("llama_v2"),
                                       [(video_placeholder(32) + " What is it?", "noise")])
        return {"image": torch.rand(3, 4, 112, 112), "input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


@registry.register_builder("plain_shapes")
class PlainShapesBuilder(BaseDatasetBuilder):
    DATASET_CONFIG_DICT = {"default": str(Path(__file__).with_name("plain_shapes.yaml"))}

    def build_datasets(self):
        return {"train": PlainShapes(load_tokenizer(self.config.tokenizer_name), self.config.size)}
'''


def test_ported_lavis_processor_and_plain_dataset_train_in_a_mix(tiny_llm_dir, clips_dir, tmp_path):
    from conftest import TINY_CONFIG
    from video_llama.jobs.experiment import train

    plugin = tmp_path / "ported_plugin.py"
    plugin.write_text(PORTED_PLUGIN)
    (tmp_path / "plain_shapes.yaml").write_text("datasets:\n  plain_shapes:\n    size: 5\n    tokenizer_name: null\n"
                                                "    sample_ratio: 1\n")
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["plugins"] = ["ported_plugin.py"]  # named in the YAML, relative to it
    experiment = tmp_path / "ported.yaml"
    experiment.write_text(yaml.safe_dump(cfg))
    summary = train(["--cfg-path", str(experiment), "--options",
                     f"model.llama_model={tiny_llm_dir}", f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
                     f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
                     f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}",
                     "datasets.webvid_instruct.vis_processor.train.name=lavis_style_video",
                     "datasets.webvid_instruct.vis_processor.train.n_frms=4",
                     f"datasets.plain_shapes.tokenizer_name={tiny_llm_dir}",
                     "run.iters_per_epoch=8", f"run.output_dir={tmp_path / 'out'}"])
    calls = sys.modules["video_llama_plugin_ported_plugin"].CALLS
    assert summary["steps"] == 8 and calls["processor"] > 0 and calls["plain"] > 0
    assert calls["processor"] + calls["plain"] == 8 * 2  # batch 2: every sample from one of the two
