"""train.py end to end on the tiny recipe: one process, two processes, stop/resume, atomic saves."""

import json
import math
from pathlib import Path
import os
import subprocess
import sys
import types

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from video_llama.common import run_folder
from video_llama.common.errors import CheckpointError
from video_llama.common.run_folder import RunFolder
from video_llama.conversation.segment_encoding import TEXT_IDS, TEXT_IDS_KEY
from video_llama.jobs.experiment import train as train_main
from video_llama.runners.runner_base import RunnerBase

from conftest import BATCH_LOG_PLUGIN, REPO_ROOT, TINY_CONFIG, trained_videos


def options(llm, clips, out, *extra):
    return [
        f"model.llama_model={llm}", f"datasets.webvid_instruct.tokenizer_name={llm}",
        f"datasets.webvid_instruct.build_info.anno_dir={clips / 'train.json'}",
        f"datasets.webvid_instruct.build_info.videos_dir={clips}",
        "datasets.webvid_instruct.vis_processor.train.n_frms=4", f"run.output_dir={out}", *extra,
    ]


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_train_script_one_process_writes_checkpoint(tiny_llm_dir, clips_dir, tmp_path):
    splits = json.dumps({"train": str(clips_dir / "train.json"), "val": str(clips_dir / "train.json")})
    cmd = [sys.executable, "train.py", "--cfg-path", str(TINY_CONFIG), "--options",
           *options(tiny_llm_dir, clips_dir, tmp_path / "out", "run.iters_per_epoch=3", "run.valid_splits=[val]"),
           f"datasets.webvid_instruct.build_info.anno_dir={splits}"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and len(losses(run_dir)) == 3
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert len(evals) == 1 and evals[0]["val_loss"] > 0
    weights = load_file(str(run_dir / "checkpoint_e1_s0" / "model.safetensors"))
    assert set(k.split(".")[0] for k in weights) == {"video_frame_position_embedding", "video_Qformer",
                                                       "video_query_tokens", "llama_proj"}
    assert (run_dir / "config.yaml").is_file() and (run_dir / "latest").read_text().strip() == "checkpoint_e1_s0"
    assert "effective batch 2 = 2 per process × 1 processes × 1 accumulation" in result.stdout
    with safe_open(str(run_dir / "checkpoint_e1_s0" / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {TEXT_IDS_KEY: TEXT_IDS}  # which text path the model learned from


def test_pixels_finished_on_the_device_train_and_evaluate_as_in_the_workers(tiny_llm_dir, clips_dir, tmp_path,
                                                                            monkeypatch):
    """run.pixels_on_device=True (uint8 batches, crop and normalisation in the training process) on
    the CPU: the same losses and validation loss as finishing frames in the data-loader workers."""
    from video_llama.processors import pixel_plan
    from video_llama.runners import runner_base

    arrived = []  # the dtype of each batch's frames as the loader hands them over
    finish = pixel_plan.batch_to_device
    monkeypatch.setattr(runner_base, "batch_to_device", lambda b, d: arrived.append(b["image"].dtype) or finish(b, d))
    splits = json.dumps({"train": str(clips_dir / "train.json"), "val": str(clips_dir / "train.json")})
    results = {}
    for on_device in (False, True):
        arrived.clear()
        summary = train_main(["--cfg-path", str(TINY_CONFIG), "--options", *options(
            tiny_llm_dir, clips_dir, tmp_path / str(on_device), "run.iters_per_epoch=3", "run.num_workers=2",
            "run.valid_splits=[val]", f"run.pixels_on_device={on_device}"),
            f"datasets.webvid_instruct.build_info.anno_dir={splits}"])
        metrics = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        results[on_device] = [json.loads(line).get("loss", json.loads(line).get("val_loss")) for line in metrics]
        assert set(arrived) == {torch.uint8 if on_device else torch.float32}
    assert len(results[True]) == 4 and results[True] == results[False]


def test_a_finished_job_started_again_with_resume_auto_ends_at_once_with_success(tiny_llm_dir, clips_dir, tmp_path,
                                                                                 monkeypatch):
    """torchrun or SLURM starting a job again after its last checkpoint (a process died while the run
    wrote its summary): run.resume=auto finds it finished and says so, instead of failing every restart."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "finished-job")
    argv = ["--cfg-path", str(TINY_CONFIG), "--options",
            *options(tiny_llm_dir, clips_dir, tmp_path / "out", "run.iters_per_epoch=2", "run.resume=auto")]
    first = train_main(argv)
    again = train_main(argv)
    assert again["already_finished"] and again["run_dir"] == first["run_dir"] and again["steps"] == first["steps"] == 2
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["job_finished-job"]


def test_a_clip_whose_decoder_blocks_is_skipped_and_the_run_goes_on(tiny_llm_dir, clips_dir, tmp_path, monkeypatch):
    """A decoder blocked in the kernel inside a data-loader worker (a FIFO let through to decord, as
    a file on a stalled mount blocks): abandoned after decode_timeout_s, skipped by name, listed in
    the run's bad_clips.jsonl, and the run finishes."""
    from video_llama.processors import video_decoding

    os.mkfifo(tmp_path / "stalled.mp4")
    monkeypatch.setattr(video_decoding, "file_problem", lambda path: None)  # the workers fork with it
    records = json.loads((clips_dir / "train.json").read_text())
    anno = tmp_path / "train.json"
    anno.write_text(json.dumps([{**records[0], "video": str(tmp_path / "stalled.mp4")}, *records]))
    summary = train_main(["--cfg-path", str(TINY_CONFIG), "--options", *options(
        tiny_llm_dir, clips_dir, tmp_path / "out", "run.iters_per_epoch=3", "run.num_workers=2",
        "run.batch_size_train=2", "datasets.webvid_instruct.decode_timeout_s=1"),
        f"datasets.webvid_instruct.build_info.anno_dir={anno}"])
    assert summary["steps"] == 3 and summary["bad_clips"] == 1
    (bad,) = run_folder.read_bad_clips(RunFolder(summary["run_dir"]).bad_clips)
    assert bad["clip"].endswith("stalled.mp4") and "took longer than 1.0 s (decode_timeout_s)" in bad["error"]


@pytest.mark.multiprocess
def test_torchrun_two_processes_stay_in_sync(tiny_llm_dir, clips_dir, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "train.py", "--cfg-path", str(TINY_CONFIG),
           "--plugins", str(BATCH_LOG_PLUGIN), "--options",
           *options(tiny_llm_dir, clips_dir, tmp_path / "out", "run.iters_per_epoch=3", "run.distributed=True",
                    "run.world_size=4", "run.batch_size_train=1", "run.task=batch_logged_video_text_pretrain")]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env={**env(), "BATCH_LOG_DIR": str(tmp_path)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "run.world_size is 4 but torchrun started 2 process(es); the launcher wins" in result.stdout + result.stderr
    (run_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    first, second = summary["rank_weight_fingerprints"]
    assert first == second and summary["replicas_agree"]  # identical parameters on both ranks after training
    batches = trained_videos(tmp_path)
    assert sorted(batches) == [0, 1] and len(batches[0]) == len(batches[1]) == summary["steps"]
    assert batches[0][0] != batches[1][0]  # ranks read different samples


@pytest.mark.multiprocess
def test_a_worker_killed_mid_epoch_is_restarted_by_torchrun_and_the_run_resumes_by_itself(tiny_llm_dir, clips_dir,
                                                                                          tmp_path):
    """torchrun --max-restarts=1 restarts the group after rank 1 is SIGKILLed in epoch 2; run.resume=auto
    finds the job's own run folder and continues from its latest checkpoint: the weights of a run
    never killed."""
    from safetensors.torch import load_file

    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")

    def launch(name, task, **kill):
        logs = tmp_path / f"{name}_batches"
        logs.mkdir()
        cmd = [torchrun, "--standalone", "--nproc_per_node=2", "--max-restarts=1", "train.py", "--cfg-path",
               str(TINY_CONFIG), "--plugins", str(BATCH_LOG_PLUGIN), "--options",
               *options(tiny_llm_dir, clips_dir, tmp_path / name, "run.iters_per_epoch=3", "run.max_epoch=2",
                        "run.batch_size_train=1", "run.resume=auto", f"run.task={task}")]
        result = subprocess.run(cmd, cwd=REPO_ROOT, env={**env(), "BATCH_LOG_DIR": str(logs), **kill},
                                capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        (run_dir,) = (tmp_path / name).iterdir()
        return run_dir, logs, result.stdout + result.stderr

    whole, _, _ = launch("whole", "batch_logged_video_text_pretrain")
    killed, logs, output = launch("killed", "killed_once_video_text_pretrain", KILL_RANK="1", KILL_AT_STEP="5")
    assert (logs / "killed").is_file() and "continuing from it" in output  # it died, and resumed on its own
    assert killed.name.startswith("job_") and (killed / "latest").read_text().strip() == "checkpoint_e2_s0"
    ours, theirs = (load_file(str(run / "checkpoint_e2_s0" / "model.safetensors")) for run in (killed, whole))
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in ours)


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_loss_that_turns_nan_stops_naming_the_clips_or_is_skipped(tiny_llm_dir, clips_dir, tmp_path, monkeypatch,
                                                                   policy):
    from safetensors.torch import load_file

    from video_llama.common.errors import TrainingError
    from video_llama.tasks.base_task import BaseTask

    calls, real = [], BaseTask.train_step

    def nan_at_step_three(self, model, samples, num_items_in_batch=None):
        loss = real(self, model, samples, num_items_in_batch)
        if model.training:
            calls.append(samples["video"])
            if len(calls) == 3:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(BaseTask, "train_step", nan_at_step_three)
    args = ["--cfg-path", str(TINY_CONFIG), "--options",
            *options(tiny_llm_dir, clips_dir, tmp_path, "run.iters_per_epoch=4", f"run.nonfinite_loss={policy}")]
    if policy == "stop":
        with pytest.raises(TrainingError, match=r"gradients turned non-finite.*clips of this step: \['clip\d\.mp4"):
            train_main(args)
        return
    summary = train_main(args)
    weights = load_file(str(Path(summary["run_dir"]) / "checkpoint_e1_s0" / "model.safetensors"))
    assert summary["steps"] == 4 and all(torch.isfinite(w).all() for w in weights.values())  # the NaN step left out


@pytest.mark.multiprocess
def test_two_nodes_on_one_machine_train_like_one_node_with_two_processes(tiny_llm_dir, clips_dir, tmp_path):
    """Two torchrun launchers (--nnodes=2, one process each, c10d rendezvous on the loopback) against
    one launcher of two processes: the same losses and weights."""
    import socket

    from safetensors.torch import load_file

    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    settings = ("run.iters_per_epoch=3", "run.batch_size_train=1", "run.num_workers=0")

    def script(out):
        return ["train.py", "--cfg-path", str(TINY_CONFIG), "--options", *options(tiny_llm_dir, clips_dir, out, *settings)]

    one = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", *script(tmp_path / "one")], cwd=REPO_ROOT,
                         env=env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]  # files, not pipes: neither launcher waits on a reader
    nodes = [subprocess.Popen([torchrun, "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
                               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two_nodes",
                               *script(tmp_path / "two")], cwd=REPO_ROOT, env=env(), stdout=log.open("w"),
                              stderr=subprocess.STDOUT) for rank, log in zip((0, 1), logs)]
    try:
        codes = [node.wait(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]

    def losses(run_root):
        (run_dir,) = run_root.iterdir()
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return run_dir, [line["loss"] for line in lines if "loss" in line]

    (one_dir, one_losses), (two_dir, two_losses) = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one_losses) == 3 and one_losses == pytest.approx(two_losses, abs=1e-6)
    ours, theirs = (load_file(str(run / "checkpoint_e1_s0" / "model.safetensors")) for run in (two_dir, one_dir))
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in ours)


class StopAfter(Exception):
    pass


def last_per_step(run_dir):
    """{(epoch, step): loss}: after a resume, a step's later line supersedes the earlier one."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["epoch"], r["step"]): r["loss"] for r in records if "loss" in r}


@pytest.mark.parametrize("source", ["files", "shards"])
@pytest.mark.slow
def test_stopped_and_resumed_run_matches_uninterrupted(tiny_llm_dir, clips_dir, tmp_path, monkeypatch, source):
    """Dropout on, validation each epoch, stopped mid-epoch and resumed: the same weights and the
    same best checkpoint as a run that never stopped, in the same run folder; read from files, or
    from shards (one clip per shard: 2 workers read their own streams, resumed by seeking)."""
    splits = {"train": str(clips_dir / "train.json"), "val": str(clips_dir / "train.json")}
    common = ["run.max_epoch=2", "run.iters_per_epoch=4", "run.save_freq_iters=2", "run.num_workers=2",
              "run.batch_size_train=2", "run.warmup_steps=2", "run.valid_splits=[val]",
              "model.qformer_dropout=0.2"]  # train augmentation too: random crops
    if source == "files":
        anno = f"datasets.webvid_instruct.build_info.anno_dir={json.dumps(splits)}"
    else:
        from video_llama.data_tools.shards import export_shards

        export_shards(splits, clips_dir, tmp_path / "shards", samples_per_shard=1, progress=False)
        common.append("datasets.webvid_instruct.build_info.anno_dir=null")
        anno = f"datasets.webvid_instruct.build_info.shards={tmp_path / 'shards'}"
    full_dir, stop_dir = tmp_path / "full", tmp_path / "stop"
    train_main(["--cfg-path", str(TINY_CONFIG), "--options", *options(tiny_llm_dir, clips_dir, full_dir, *common), anno])

    original = RunnerBase.train_iteration
    calls = types.SimpleNamespace(n=0)

    def stop_in_epoch_two(self, *args, **kwargs):
        calls.n += 1
        if calls.n == 8:  # iteration 3 of epoch 1; the last checkpoint is at epoch 1, step 2
            raise StopAfter
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunnerBase, "train_iteration", stop_in_epoch_two)
    with pytest.raises(StopAfter):
        train_main(["--cfg-path", str(TINY_CONFIG), "--options", *options(tiny_llm_dir, clips_dir, stop_dir, *common), anno])
    monkeypatch.setattr(RunnerBase, "train_iteration", original)
    (stopped_run,) = stop_dir.iterdir()
    assert (stopped_run / "latest").read_text().strip() == "checkpoint_e1_s2"

    summary = train_main(["--cfg-path", str(TINY_CONFIG), "--options",
                          *options(tiny_llm_dir, clips_dir, tmp_path / "elsewhere", *common,
                                   f"run.resume_ckpt_path={stopped_run}"), anno])
    assert Path(summary["run_dir"]) == stopped_run and not (tmp_path / "elsewhere").exists()
    (full_run,) = full_dir.iterdir()
    full_losses, resumed_losses = last_per_step(full_run), last_per_step(stopped_run)
    assert len(full_losses) == 8 and resumed_losses.keys() == full_losses.keys()
    assert list(resumed_losses.values()) == pytest.approx(list(full_losses.values()), abs=1e-6)
    assert '"resumed_from": "checkpoint_e1_s2"' in (stopped_run / "metrics.jsonl").read_text()
    assert (stopped_run / "best").read_text() == (full_run / "best").read_text()
    full_weights = load_file(str(full_run / "checkpoint_e2_s0" / "model.safetensors"))
    resumed_weights = load_file(str(stopped_run / "checkpoint_e2_s0" / "model.safetensors"))
    assert all(torch.allclose(full_weights[k], resumed_weights[k], atol=1e-6) for k in full_weights)


def test_folders_left_by_a_killed_write_are_removed_by_the_next_save(tmp_path):
    (tmp_path / ".tmp-checkpoint_e1_s0-abc").mkdir()
    RunFolder(tmp_path).save_checkpoint("checkpoint_e1_s0", {"w": torch.ones(1)}, {"epoch": 1, "step": 0}, "run: {}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_e1_s0", "latest"]


def test_checkpoint_killed_mid_write_leaves_previous_intact(tmp_path, monkeypatch):
    weights = {"w": torch.ones(3)}
    first = RunFolder(tmp_path).save_checkpoint("checkpoint_e1_s0", weights, {"epoch": 1, "step": 0}, "run: {}\n")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while the state file is being written

    monkeypatch.setattr(run_folder.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        RunFolder(tmp_path).save_checkpoint("checkpoint_e2_s0", {"w": torch.zeros(3)}, {"epoch": 2, "step": 0}, "run: {}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_e1_s0", "latest"]
    loaded, state, _, folder = run_folder.load_checkpoint(tmp_path)
    assert folder == first and state["epoch"] == 1 and torch.equal(loaded["w"], weights["w"])


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(request, tmp_path, monkeypatch):
    """(folder, fill): a folder on a 1 MiB tmpfs (where this process may mount one), or one whose
    writes fail with ENOSPC once ``fill()`` is called."""
    import errno

    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "tmpfs":
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:80]}); the injected case runs")
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True))
        yield folder, lambda: None
        return

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    yield folder, lambda: monkeypatch.setattr(run_folder.torch, "save", full)


def test_a_full_disk_at_save_leaves_the_previous_checkpoint_resumable(small_disk):
    folder, fill = small_disk
    run = RunFolder(folder)
    first = run.save_checkpoint("checkpoint_e1_s0", {"w": torch.ones(8)}, {"epoch": 1, "step": 0}, "run: {}\n")
    fill()
    with pytest.raises(CheckpointError) as caught:  # 4 MiB of weights on a 1 MiB disk
        run.save_checkpoint("checkpoint_e2_s0", {"w": torch.zeros(1024, 1024)}, {"epoch": 2, "step": 0}, "run: {}\n")
    message = str(caught.value)
    assert "checkpoint checkpoint_e2_s0 could not be written" in message and "the disk is full" in message
    assert "checkpoint_e1_s0 is intact" in message and f"run.resume_ckpt_path={folder}" in message
    assert sorted(p.name for p in folder.iterdir() if p.name != "lost+found") == ["checkpoint_e1_s0", "latest"]
    loaded, state, _, resumed = run_folder.load_checkpoint(folder)
    assert resumed == first and state["epoch"] == 1 and torch.equal(loaded["w"], torch.ones(8))


@pytest.mark.slow
def test_a_run_whose_disk_fills_stops_with_the_reason_and_resumes_once_there_is_room(tiny_llm_dir, clips_dir, tmp_path):
    """A real full disk: a tmpfs with room for one more checkpoint but not two."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:80]}); "
                    "test_a_full_disk_at_save_leaves_the_previous_checkpoint_resumable[injected] covers the writer")

    def used():
        return sum(f.stat().st_size for f in disk.rglob("*") if f.is_file())

    try:
        args = ["--cfg-path", str(TINY_CONFIG), "--options",
                *options(tiny_llm_dir, clips_dir, disk, "run.iters_per_epoch=2")]
        summary = train_main([*args, "run.max_epoch=1"])
        run_dir = Path(summary["run_dir"])
        checkpoint = sum(f.stat().st_size for f in (run_dir / "checkpoint_e1_s0").iterdir())
        room = used() + checkpoint // 2 + 64 * 1024  # half a checkpoint more (and the logs)
        subprocess.run(["mount", "-o", f"remount,size={room}", str(disk)], check=True)
        resume = [*args, "run.max_epoch=2", f"run.resume_ckpt_path={run_dir}"]
        with pytest.raises(CheckpointError, match=r"checkpoint checkpoint_e2_s0 could not be written .*the disk is "
                                                  r"full.*checkpoint_e1_s0 is intact"):
            train_main(resume)
        assert (run_dir / "latest").read_text().strip() == "checkpoint_e1_s0"
        assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written left
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # room made
        summary = train_main(resume)
        assert summary["steps"] == 2 and (run_dir / "latest").read_text().strip() == "checkpoint_e2_s0"
    finally:  # lazily: the failed run's log files may still be open in this process
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.fixture(scope="module")
def uneven_answers(clips_dir, tmp_path_factory):
    """Four clips whose answers have very different token counts, so that weighting by batch
    instead of by token shows."""
    answers = ["a", "greet mode now please with many words", "b", "clean"]
    entries = [{"video": f"clip{i}.mp4", "QA": [{"q": "What happens?", "a": a}]} for i, a in enumerate(answers)]
    path = tmp_path_factory.mktemp("uneven") / "train.json"
    path.write_text(json.dumps(entries))
    return path


def first_gradient(run_dir):
    """AdamW's first moment after one step is (1 - beta1) × the gradient: the step's mean gradient."""
    state = torch.load(run_dir / "checkpoint_e1_s0" / "training_state.pt", weights_only=True)["optimizer"]["state"]
    return [state[i]["exp_avg"] / 0.1 for i in sorted(state)]


def one_step(tiny_llm_dir, clips_dir, anno, out, batch, accum, nproc=1):
    args = ["train.py", "--cfg-path", str(TINY_CONFIG), "--options",
            *options(tiny_llm_dir, clips_dir, out, f"run.batch_size_train={batch}", f"run.accum_grad_iters={accum}",
                     f"run.iters_per_epoch={accum}", "run.lr_sched=constant_lr", "run.warmup_steps=0",
                     "run.distributed=True"),
            f"datasets.webvid_instruct.build_info.anno_dir={anno}"]
    if nproc > 1:
        args = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", f"--nproc_per_node={nproc}", *args]
    else:
        args = [sys.executable, *args]
    result = subprocess.run(args, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = out.iterdir()
    return first_gradient(run_dir)


@pytest.mark.multiprocess
def test_step_loss_is_the_mean_over_answer_tokens_of_the_effective_batch(tiny_llm_dir, clips_dir, uneven_answers, tmp_path):
    """1 process × batch 4, 1 × batch 2 × accumulation 2, and 2 gloo ranks × batch 2 read the same
    four clips (with the same augmentation) and must take the same step: the gradient of the mean
    loss over all answer tokens. Tolerance: float32 summation order, 1e-5 of the gradient's norm."""
    reference = one_step(tiny_llm_dir, clips_dir, uneven_answers, tmp_path / "b4", batch=4, accum=1)
    accumulated = one_step(tiny_llm_dir, clips_dir, uneven_answers, tmp_path / "b2a2", batch=2, accum=2)
    two_ranks = one_step(tiny_llm_dir, clips_dir, uneven_answers, tmp_path / "r2b2", batch=2, accum=1, nproc=2)
    assert len(reference) == len(accumulated) == len(two_ranks) > 0
    flat = lambda tensors: torch.cat([t.flatten() for t in tensors])  # noqa: E731
    ref = flat(reference)
    for other in (flat(accumulated), flat(two_ranks)):  # measured: 1.8e-7 and 2.7e-7 of the norm
        assert (other - ref).norm() <= 1e-5 * ref.norm()


def test_accumulation_windows():
    r = RunnerBase.__new__(RunnerBase)
    r.run_cfg = types.SimpleNamespace(accum_grad_iters=2)
    assert [r._window_size(s, 3) for s in range(3)] == [2, 2, 1]  # the epoch ends the second window early


def test_the_best_checkpoint_breaks_ties_by_the_loss_then_the_later_epoch():
    r = RunnerBase.__new__(RunnerBase)
    r.best, r.best_rank = (None, None, None), None
    epochs = [{"val_top1": 0.5, "val_top1_tiebreak_loss": 0.9},
              {"val_top1": 0.75, "val_top1_tiebreak_loss": 0.8},
              {"val_top1": 0.75, "val_top1_tiebreak_loss": 0.6},  # as right, and surer: better
              {"val_top1": 0.75, "val_top1_tiebreak_loss": 0.7},  # as right, less sure: not
              {"val_top1": 0.5, "val_top1_tiebreak_loss": 0.1}]
    assert [r._keep_best(f"e{i}", results) for i, results in enumerate(epochs)] == [True, True, True, False, False]
    assert r.best == ("e2", 0.75, "val_top1")
    r.best, r.best_rank = (None, None, None), None
    assert [r._keep_best(f"e{i}", {"val_top1": 0.5}) for i in range(3)] == [True, True, True]  # no loss: the latest
    r.best, r.best_rank = (None, None, None), None
    assert [r._keep_best(f"e{i}", {"val_loss": v}) for i, v in enumerate([2.0, 1.0, 1.5])] == [True, True, False]


@pytest.mark.slow
def test_action_recognition_train_validate_keep_best_then_evaluate(tiny_llm_dir, clips_dir, tmp_path):
    from video_llama.jobs.experiment import evaluate

    splits = json.dumps({"train": str(clips_dir / "train.json"), "val": str(clips_dir / "train.json")})
    summary = train_main(["--cfg-path", str(TINY_CONFIG), "--options",
                          *options(tiny_llm_dir, clips_dir, tmp_path / "train", "run.iters_per_epoch=2", "run.max_epoch=2",
                                   "run.task=action_recognition", "run.valid_splits=[val]"),
                          f"datasets.webvid_instruct.build_info.anno_dir={splits}"])
    run_dir = Path(summary["run_dir"])
    best = (run_dir / "best").read_text().splitlines()
    assert best[0] == summary["best_checkpoint"] and "val_top1" in best[1]
    assert summary["never_left_chance"]  # 4 validation clips cannot show that anything was learned
    # the run keeps the answers it chooses among: later commands need only the folder
    assert json.loads((run_dir / "labels.json").read_text())["labels"] == ["clean_mode", "greet_mode"]
    assert (run_dir / "eval_epoch0" / "webvid_instruct_val" / "confusion_matrix.png").is_file()

    by_mode = {}
    for mode in ("rank", "generate"):
        result = by_mode[mode] = evaluate(["--cfg-path", str(TINY_CONFIG), "--options",
                           *options(tiny_llm_dir, clips_dir, tmp_path / f"eval_{mode}", "run.task=action_recognition",
                                    "run.test_splits=[test]", f"run.eval_mode={mode}", f"model.ckpt={run_dir}"),
                           f"datasets.webvid_instruct.build_info.anno_dir={{test: {clips_dir / 'train.json'}}}"])
        out = Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test"
        assert result["checkpoint"] == str(run_dir / best[0])  # the run folder meant its best checkpoint
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n"] == 4 and set(metrics["per_class"]) == {"clean_mode", "greet_mode"}
        assert result["test_top1"] == metrics["top1"] and 0.0 <= metrics["top1"] <= 1.0
        predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert len(predictions) == 4 and all(("answer" in p) == (mode == "generate") for p in predictions)
        assert (out / "confusion_matrix.png").is_file() and (out / "confusion_matrix.json").is_file()
        calibration = metrics.get("calibration")  # rank mode: how far the label probabilities can be trusted
        assert (calibration is not None) == (mode == "rank") == (out / "calibration.png").is_file()
        if calibration:
            assert 0 <= calibration["ece"] <= 1 and sum(row[4] for row in calibration["reliability_bins"]) == 4
            assert calibration["risk_coverage"]["coverage"][-1] == 1.0
            assert abs(calibration["risk_coverage"]["risk"][-1] - (1 - metrics["top1"])) < 1e-3

    # the model is the run's: an evaluation config that restates it with other sizes is told so, not broken
    restated = evaluate(["--cfg-path", str(TINY_CONFIG), "--options",
                         *options(tiny_llm_dir, clips_dir, tmp_path / "eval_restated", "run.task=action_recognition",
                                  "run.test_splits=[test]", f"model.ckpt={run_dir}", "model.num_video_query_token=4",
                                  "datasets.webvid_instruct.num_video_query_token=4", "model.vit_depth=3", "run.eval_mode=rank"),
                         f"datasets.webvid_instruct.build_info.anno_dir={{test: {clips_dir / 'train.json'}}}"])
    assert restated["test_top1"] == by_mode["rank"]["test_top1"] and restated["checkpoint"] == by_mode["rank"]["checkpoint"]

    # --run alone: the experiment as the run saved it (its data, processors and model), outputs inside the run
    alone = evaluate(["--run", str(run_dir), "--options", "run.test_splits=[val]", "run.eval_mode=rank"])
    assert Path(alone["run_dir"]).parent == run_dir / "evaluations" and alone["checkpoint"] == by_mode["rank"]["checkpoint"]
    assert alone["val_top1"] == by_mode["rank"]["test_top1"]  # the same 4 clips
    from video_llama.jobs.experiment import experiment
    from video_llama.common.errors import UserError

    with pytest.raises(UserError, match="--run RUN_DIR"):
        experiment(types.SimpleNamespace(run=None, cfg_path=None, options=[]))
    with pytest.raises(UserError, match="no such folder"):
        experiment(types.SimpleNamespace(run=str(tmp_path / "nowhere"), cfg_path=None, options=[]))

    # calibrate: temperature (and a threshold) into the run folder; evaluation then abstains below it
    from video_llama.cli.calibrate import main as calibrate_main

    common = [*options(tiny_llm_dir, clips_dir, tmp_path / "calib", "run.task=action_recognition", f"model.ckpt={run_dir}"),
              f"datasets.webvid_instruct.build_info.anno_dir={splits}"]
    assert calibrate_main(["--cfg-path", str(TINY_CONFIG), "--split", "val", "--target-error", "0.5", "--options", *common]) == 0
    saved = json.loads((run_dir / "calibration.json").read_text())
    assert saved["temperature"] > 0 and saved["n"] == 4 and saved["split"] == "val"
    assert 0 <= saved["threshold"] <= 1 and 0 <= saved["coverage"] <= 1 and saved["ece_after"] <= saved["ece_before"] + 1e-9
    for extra, coverage in (([], saved["coverage"]), (["run.decision_threshold=1.0", "run.abstain_label=none"], 0.0)):
        result = evaluate(["--cfg-path", str(TINY_CONFIG), "--options",
                           *options(tiny_llm_dir, clips_dir, tmp_path / "eval_calibrated", "run.task=action_recognition",
                                    "run.test_splits=[test]", f"model.ckpt={run_dir}", *extra),
                           f"datasets.webvid_instruct.build_info.anno_dir={{test: {clips_dir / 'train.json'}}}"])
        out = Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test"
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["calibration"]["temperature"] == saved["temperature"]  # the same clips as val: same coverage
        assert metrics["abstention"]["coverage"] == pytest.approx(coverage)
        predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        unknown = "none" if extra else "unknown"
        assert all((p["decision"] == unknown) == (p["p"] < metrics["abstention"]["threshold"]) for p in predictions)

    # run.evaluate: True makes train.py evaluate only (the guide's key), nothing is trained
    only = train_main(["--cfg-path", str(TINY_CONFIG), "--options",
                       *options(tiny_llm_dir, clips_dir, tmp_path / "evaluate_only", "run.task=action_recognition",
                                "run.test_splits=[test]", "run.evaluate=True", f"model.ckpt={run_dir}"),
                       f"datasets.webvid_instruct.build_info.anno_dir={{test: {clips_dir / 'train.json'}}}"])
    assert "test_top1" in only and "steps" not in only
    assert not list(Path(only["run_dir"]).glob("checkpoint_*"))


def test_guide_yaml_trains_with_tiny_sizes_and_local_paths(tiny_llm_dir, clips_dir, tmp_path, caplog):
    """The guide's experiment as written, only sizes and paths changed through --options; its
    `amp: True` runs as bf16 autocast on CPU, and its world_size 4 / warmup 1000 are reported."""
    import logging

    from conftest import DATA_DIR

    guide = DATA_DIR / "guide_visionbranch_stage2_finetune.yaml"
    with caplog.at_level(logging.WARNING):
        summary = train_main(["--cfg-path", str(guide), "--options", "model.model_type=tiny", "model.ckpt=null",
                              f"model.llama_model={tiny_llm_dir}", f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
                              f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
                              f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}",
                              "run.device=cpu", "run.iters_per_epoch=2", "run.max_epoch=1", "run.num_workers=2",
                              f"run.output_dir={tmp_path}"])
    assert summary["steps"] == 2 and Path(summary["checkpoint"]).is_dir()
    assert math.isfinite(summary["final_loss"])
    assert "bf16 autocast" in caplog.text and "never reach run.init_lr" in caplog.text
    assert "run.world_size is 4" in caplog.text


def test_a_run_that_never_left_chance_is_told_whether_it_memorised():
    from video_llama.runners.runner_base import why_not_learnt

    memorised = [{"loss": 2.0 - 1.9 * i / 99} for i in range(100)]  # 2.0 → 0.1 while validation stayed at chance
    assert "fell from 1.91 to 0.19" in why_not_learnt(memorised) and "memorised" in why_not_learnt(memorised)
    assert "How much data" in why_not_learnt([{"loss": 1.5}] * 50)  # it learnt nothing at all
    assert "How much data" in why_not_learnt([])
