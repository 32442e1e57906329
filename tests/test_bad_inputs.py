"""Bad inputs a new user makes: each gives one readable message (the key or file, and the fix),
exit 2 and no traceback; the ones that used to give a wrong result silently now say so."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, TINY_CONFIG

pytestmark = pytest.mark.slow


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def base_options(llm, clips, out):
    return [f"model.llama_model={llm}", f"datasets.webvid_instruct.tokenizer_name={llm}",
            f"datasets.webvid_instruct.build_info.anno_dir={clips / 'train.json'}",
            f"datasets.webvid_instruct.build_info.videos_dir={clips}",
            "datasets.webvid_instruct.vis_processor.train.n_frms=4", f"run.output_dir={out}"]


def run_script(script, options, cwd=REPO_ROOT):
    cmd = [sys.executable, script, "--cfg-path", str(TINY_CONFIG), "--options", *options]
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished_run(tiny_llm_dir, clips_dir, tmp_path_factory):
    """A finished two-iteration run, and copies of it broken in the ways a disk or a user breaks them."""
    from video_llama.jobs.experiment import train

    out = tmp_path_factory.mktemp("finished")
    summary = train(["--cfg-path", str(TINY_CONFIG), "--options", *base_options(tiny_llm_dir, clips_dir, out),
                     "run.iters_per_epoch=2"])
    run_dir = Path(summary["run_dir"])
    truncated = out / "truncated"
    shutil.copytree(run_dir, truncated)
    weights = truncated / "checkpoint_e1_s0" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    empty_latest = out / "empty_latest"
    empty_latest.mkdir()
    (empty_latest / "latest").write_text("")
    return {"finished": run_dir, "truncated": truncated, "empty_latest": empty_latest}


BAD_OPTIONS = [  # (extra --options, what the message must say)
    (["run.labels=Run, Walk"], "run.labels: must be a list of label strings, e.g. [Run, Walk]"),
    (["run.iters_per_epoch=two"], "run.iters_per_epoch: must be a positive integer"),
    (["run.max_grad_norm=big"], "run.max_grad_norm: must be a positive number"),
    (["run.num_workers=-1"], "run.num_workers: must be an integer >= 0"),
    (["run.lr_scales={llama_modle: 0.1}"], "did you mean 'llama_model'?"),
    (["run.eval_mode=rnk"], "did you mean 'rank'?"),
    (["run.valid_splits=val"], "run.valid_splits: must be a list of split names"),
    (["run.valid_splits=[val]"], "run.valid_splits names split 'val', which no dataset has"),
    (["datasets.webvid_instruct.vis_processor.eval.n_frms=0"], "n_frms must be a positive number of frames"),
    (["model.low_resource=True"], "model.llm_load_in_8bit needs a CUDA GPU (bitsandbytes) but run.device is 'cpu'"),
    (["model.llm_load_in_4bit=True"], "model.llm_load_in_4bit needs a CUDA GPU"),
    (["model.ckpt=nowhere/VL.pth"], "model.ckpt: nowhere/VL.pth does not exist"),
    (["run.output_dir=/etc/hostname/runs"], "run.output_dir: /etc/hostname is a file, not a folder"),
    (["model.llama_model=nowhere/tiny-llm", "datasets.webvid_instruct.tokenizer_name=nowhere/tiny-llm"],
     "video-llama tiny-llm nowhere/tiny-llm"),
]


@pytest.mark.parametrize("extra, expected", BAD_OPTIONS, ids=[o[0][0].split("=")[0] for o in BAD_OPTIONS])
def test_bad_settings_fail_at_start_up_with_one_message(tiny_llm_dir, clips_dir, tmp_path, extra, expected):
    result = run_script("train.py", base_options(tiny_llm_dir, clips_dir, tmp_path / "out") + extra)
    assert result.returncode == 2 and expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.parametrize("which, extra, expected", [
    ("finished", [], "the run is finished; raise run.max_epoch"),
    ("truncated", [], "cannot be read"),
    ("empty_latest", [], "names nothing"),
    ("finished", ["run.max_epoch=2", "model.max_frame_pos=16"], "was written by a model of other sizes"),
])
def test_bad_resume_points_fail_with_one_message(tiny_llm_dir, clips_dir, tmp_path, finished_run, which, extra,
                                                 expected):
    before = sorted(p.name for p in finished_run[which].iterdir())
    result = run_script("train.py", base_options(tiny_llm_dir, clips_dir, tmp_path / "out")
                        + ["run.iters_per_epoch=2", f"run.resume_ckpt_path={finished_run[which]}", *extra])
    assert result.returncode == 2 and expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in finished_run[which].iterdir()) == before  # nothing written or lost


def test_bad_annotation_files_name_the_file(tiny_llm_dir, clips_dir, tmp_path):
    latin = tmp_path / "latin1.json"
    latin.write_bytes('[{"video": "clip0.mp4", "QA": [{"q": "caf\xe9?", "a": "x"}]}]'.encode("latin-1"))
    result = run_script("train.py", base_options(tiny_llm_dir, clips_dir, tmp_path / "out")
                        + [f"datasets.webvid_instruct.build_info.anno_dir={latin}"])
    assert result.returncode == 2 and "latin1.json is not UTF-8" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_evaluate_without_a_checkpoint_refuses(tiny_llm_dir, clips_dir, tmp_path):
    result = run_script("evaluate.py", base_options(tiny_llm_dir, clips_dir, tmp_path / "out")
                        + ["run.task=action_recognition", "run.test_splits=[test]",
                           f"datasets.webvid_instruct.build_info.anno_dir={{test: {clips_dir / 'train.json'}}}"])
    assert result.returncode == 2 and "model.ckpt is not set" in result.stderr and "'random'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_test_clip_is_left_out_and_reported_never_replaced(tiny_llm_dir, clips_dir, tmp_path):
    """4 test records, one a zero-byte file: 3 clips scored, 1 listed as unreadable; with
    model.ckpt: random the output says the model is untrained."""
    from video_llama.jobs.experiment import evaluate

    (tmp_path / "empty.mp4").write_bytes(b"")
    shutil.copy(clips_dir / "clip0.mp4", tmp_path / "clip0.mp4")
    entries = json.loads((clips_dir / "train.json").read_text())
    entries[1]["video"] = str(tmp_path / "empty.mp4")
    (tmp_path / "test.json").write_text(json.dumps(entries))
    result = evaluate(["--cfg-path", str(TINY_CONFIG), "--options", *base_options(tiny_llm_dir, clips_dir, tmp_path / "out"),
                       "run.task=action_recognition", "run.test_splits=[test]", "model.ckpt=random",
                       f"datasets.webvid_instruct.build_info.anno_dir={{test: {tmp_path / 'test.json'}}}"])
    assert result["untrained"] is True
    metrics = json.loads((Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test" / "metrics.json").read_text())
    assert metrics["n"] == 3 and [u[0] for u in metrics["unreadable"]] == [str(tmp_path / "empty.mp4")]
    predictions = (Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test" / "predictions.jsonl").read_text()
    assert sorted(json.loads(line)["video"] for line in predictions.splitlines()) == ["clip0.mp4", "clip2.mp4", "clip3.mp4"]


def test_labels_come_from_the_trained_run_and_unknown_answers_are_left_out(tiny_llm_dir, clips_dir, tmp_path,
                                                                          finished_run):
    """The test side has no labels.json and an answer the run never learned: scored over the
    trained run's labels, that clip is listed, not counted wrong."""
    from video_llama.jobs.experiment import evaluate

    anno = tmp_path / "anno"
    anno.mkdir()
    (anno / "labels.json").write_text(json.dumps({"labels": ["clean_mode", "greet_mode"]}))
    shutil.copy(clips_dir / "train.json", anno / "train.json")
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run["finished"], run_dir)
    config = (run_dir / "config.yaml").read_text().replace(str(clips_dir / "train.json"), str(anno / "train.json"))
    (run_dir / "config.yaml").write_text(config)
    entries = json.loads((clips_dir / "train.json").read_text())
    entries[0]["QA"][0]["a"] = "dance_mode"
    (tmp_path / "test.json").write_text(json.dumps(entries))
    result = evaluate(["--cfg-path", str(TINY_CONFIG), "--options", *base_options(tiny_llm_dir, clips_dir, tmp_path / "out"),
                       "run.task=action_recognition", "run.test_splits=[test]", f"model.ckpt={run_dir}",
                       f"datasets.webvid_instruct.build_info.anno_dir={{test: {tmp_path / 'test.json'}}}"])
    metrics = json.loads((Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test" / "metrics.json").read_text())
    assert metrics["labels"] == ["clean_mode", "greet_mode"] and metrics["n"] == 3
    assert metrics["outside_label_set"] == ["clip0.mp4"]


@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_a_stop_signal_writes_a_checkpoint_and_says_how_to_resume(tiny_llm_dir, clips_dir, tmp_path, stop, code):
    """Preemption (SIGTERM) or SLURM's warning before the time limit (SIGUSR1) with save_freq_iters 0:
    a checkpoint where the run stood, exit 128 + the signal, the resume command; resuming from it
    finishes the run. Checkpoints are readable by others (umask 022)."""
    cmd = [sys.executable, "train.py", "--cfg-path", str(TINY_CONFIG), "--options",
           *base_options(tiny_llm_dir, clips_dir, tmp_path / "out"), "run.iters_per_epoch=400", "run.log_freq=1",
           "run.num_workers=2"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.umask(0o022))
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if "epoch 0 step 3:" in line or time.monotonic() > deadline:
            break
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert f"stopped by {stop.name}" in stderr and "run.resume_ckpt_path=" in stderr and "Traceback" not in stderr
    (run_dir,) = (tmp_path / "out").iterdir()
    latest = run_dir / (run_dir / "latest").read_text().strip()
    assert latest.name.startswith("checkpoint_e0_s") and not list(run_dir.glob(".tmp-*"))
    assert (latest.stat().st_mode & 0o055) == 0o055 and ((latest / "model.safetensors").stat().st_mode & 0o044) == 0o044
    step = int(latest.name.split("_s")[1])
    resumed = run_script("train.py", base_options(tiny_llm_dir, clips_dir, tmp_path / "out")
                         + [f"run.iters_per_epoch={step + 2}", f"run.resume_ckpt_path={run_dir}"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run_dir / "latest").read_text().strip() == "checkpoint_e1_s0"


def test_keep_checkpoints_prunes_all_but_the_newest(tiny_llm_dir, clips_dir, tmp_path):
    from video_llama.jobs.experiment import train

    summary = train(["--cfg-path", str(TINY_CONFIG), "--options", *base_options(tiny_llm_dir, clips_dir, tmp_path),
                     "run.iters_per_epoch=4", "run.save_freq_iters=1", "run.keep_checkpoints=2"])
    names = sorted(p.name for p in Path(summary["run_dir"]).glob("checkpoint_*"))
    assert names == ["checkpoint_e0_s3", "checkpoint_e1_s0"]


@pytest.mark.parametrize("entries, expected", [
    ([], "split 'test' has no usable record"),
    ([{"video": "empty.mp4", "QA": [{"q": "q?", "a": "greet_mode"}]}], "test: no clip could be scored"),
])
def test_an_empty_or_unreadable_split_is_an_error_not_a_score(tiny_llm_dir, clips_dir, tmp_path, entries, expected):
    from video_llama.jobs.experiment import evaluate
    from video_llama.common.errors import UserError

    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "test.json").write_text(json.dumps(entries))
    with pytest.raises(UserError, match=expected):
        evaluate(["--cfg-path", str(TINY_CONFIG), "--options", *base_options(tiny_llm_dir, tmp_path, tmp_path / "out"),
                  "run.task=action_recognition", "run.test_splits=[test]", "model.ckpt=random",
                  f"datasets.webvid_instruct.build_info.anno_dir={{test: {tmp_path / 'test.json'}}}"])


def test_evaluating_no_split_is_a_start_up_error(tiny_llm_dir, clips_dir, tmp_path):
    result = run_script("evaluate.py", base_options(tiny_llm_dir, clips_dir, tmp_path / "out") + ["model.ckpt=random"])
    assert result.returncode == 2 and "run.test_splits is empty" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
