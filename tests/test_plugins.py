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
