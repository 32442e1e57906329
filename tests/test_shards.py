"""export-shards: WebDataset tars of the original bytes, reproducible, resumable, bad clips named."""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_folder(clips_dir, tmp_path):
    """train: the four good clips, one broken file and one missing; val: two good clips."""
    entries = json.loads((clips_dir / "train.json").read_text())
    anno = tmp_path / "anno"
    anno.mkdir()
    broken = dict(entries[0], video="broken.mp4")
    missing = dict(entries[1], video="nowhere.mp4")
    (anno / "train.json").write_text(json.dumps(entries[:2] + [broken] + entries[2:] + [missing]))
    (anno / "val.json").write_text(json.dumps(entries[:2]))
    return anno


@pytest.mark.slow
def test_export_writes_readable_shards_and_names_what_it_left_out(clips_dir, tmp_path):
    import webdataset as wds

    anno = prepare_folder(clips_dir, tmp_path)
    result = subprocess.run([sys.executable, "-m", "video_llama.cli.main", "export-shards", "--anno", str(anno),
                             "--videos-dir", str(clips_dir), "--out", str(tmp_path / "shards"), "--samples-per-shard", "2"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "left out (train): broken.mp4" in result.stdout and "left out (train): nowhere.mp4" in result.stdout
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert index["splits"]["train"]["shards"] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert index["splits"]["train"]["samples"] == [2, 1, 1] and index["splits"]["val"]["total"] == 2
    urls = [str(tmp_path / "shards" / name) for name in index["splits"]["train"]["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False, nodesplitter=None))
    assert [s["__key__"] for s in samples] == ["000000000", "000000001", "000000003", "000000004"]
    for sample in samples:
        meta = json.loads(sample["json"])
        assert sample["mp4"] == (clips_dir / meta["video"]).read_bytes()  # the original bytes
        assert meta["num_frames"] == 24 and meta["fps"] == 8 and meta["QA"][0]["a"] in ("greet_mode", "clean_mode")


def test_an_interrupted_export_resumes_to_the_same_bytes(clips_dir, tmp_path):
    from video_llama.data_tools.shards import export_shards

    anno = prepare_folder(clips_dir, tmp_path)
    whole = tmp_path / "whole"
    export_shards(anno, clips_dir, whole, samples_per_shard=2, progress=False)
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    (cut / "train-000001.tar").unlink()  # killed while writing shard 1: no final name, a temporary left
    (cut / "train-000002.tar").unlink()
    (cut / ".train-000002.tar.json").unlink()
    (cut / ".train-000001.tar.tmp-999").write_bytes(b"half a tar")
    before = digest(cut / "train-000000.tar")
    export_shards(anno, clips_dir, cut, samples_per_shard=2, progress=False)
    assert digest(cut / "train-000000.tar") == before
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar", "index.json"):
        assert digest(cut / name) == digest(whole / name), name
    assert not list(cut.glob(".*.tmp-*"))


def round_trip_data(clips_dir, tmp_path, samples_per_shard=2):
    """Five readable clips (one of them short), exported to shards of ``samples_per_shard``."""
    from video_llama.data_tools.shards import export_shards

    entries = json.loads((clips_dir / "train.json").read_text())
    entries.append(dict(entries[0], video="short.avi"))
    anno = tmp_path / "anno"
    anno.mkdir()
    (anno / "train.json").write_text(json.dumps(entries))
    (anno / "val.json").write_text(json.dumps(entries[:3]))
    export_shards(anno, clips_dir, tmp_path / "shards", samples_per_shard=samples_per_shard, progress=False)
    return anno, tmp_path / "shards"


def build_both(tiny_llm_dir, anno, clips_dir, shards, *options):
    from conftest import tiny_config

    from video_llama.common.registry import registry

    def build(*where):
        cfg = tiny_config(tiny_llm_dir, anno, clips_dir, *where, *options)
        return registry.get_builder_class("webvid_instruct")(cfg.datasets_cfg.webvid_instruct).build_datasets()

    return build(), build("datasets.webvid_instruct.build_info.anno_dir=null",
                          "datasets.webvid_instruct.build_info.videos_dir=null",
                          f"datasets.webvid_instruct.build_info.shards={shards}")


def same_sample(a, b):
    import torch

    assert a["video"] == b["video"]
    assert torch.equal(a["image"], b["image"]), a["video"]
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert a["question"] == b["question"]


def test_samples_read_from_shards_equal_those_read_from_files(tiny_llm_dir, clips_dir, tmp_path):
    from video_llama.common.utils import seeded
    from video_llama.datasets.datasets.shard_dataset import StreamId

    anno, shards = round_trip_data(clips_dir, tmp_path)
    files, sharded = build_both(tiny_llm_dir, anno, clips_dir, shards)
    assert set(sharded) == {"train", "val"} and [len(sharded[s]) for s in ("train", "val")] == [5, 3]
    for i in range(3):  # in order, with the eval processor: the same frames, tokens, timestamp sentence
        same_sample(files["val"][i], sharded["val"][i])
    # training: a stream sample is the file sample of the same clip, augmented under the same seed
    by_video = {record["video"]: i for i, record in enumerate(files["train"].records)}
    stream, seen = StreamId(consumer=0, consumers=1, seed=3), []
    for position in range(10):  # two passes over the 3 shards
        with seeded(100 + position):
            from_shards = sharded["train"].stream_item(stream, position)
        with seeded(100 + position):
            from_files = files["train"][by_video[from_shards["video"]]]
        same_sample(from_files, from_shards)
        seen.append(from_shards["video"])
    assert sorted(seen[:5]) == sorted(by_video) and sorted(seen[5:]) == sorted(by_video)  # each pass once each
    assert seen[:5] != seen[5:]  # reshuffled


def test_presampled_frame_shards_read_as_the_clip_they_came_from(tiny_llm_dir, clips_dir, tmp_path):
    """--frames 8: JPEG frames instead of a video; the eval sample has the same frames (up to JPEG),
    frame times and tokens as from the file, and training samples among the stored frames."""
    import webdataset as wds

    from video_llama.data_tools.shards import export_shards
    from video_llama.common.utils import seeded
    from video_llama.datasets.datasets.shard_dataset import StreamId

    anno, _ = round_trip_data(clips_dir, tmp_path)
    index = export_shards(anno, clips_dir, tmp_path / "frames", samples_per_shard=2, progress=False, frames=8, reencode="64")
    assert index["made_with"]["content"] == "8 frames at 64x64 (JPEG)" and index["splits"]["train"]["total"] == 5
    stored = next(iter(wds.WebDataset(str(tmp_path / "frames" / "train-000000.tar"), shardshuffle=False, nodesplitter=None)))
    assert sorted(k for k in stored if not k.startswith("__")) == [f"{j:03d}.jpg" for j in range(8)] + ["json"]
    assert json.loads(stored["json"])["frame_indices"] == [0, 3, 6, 9, 12, 15, 18, 21]
    files, sharded = build_both(tiny_llm_dir, anno, clips_dir, tmp_path / "frames")
    for i in range(3):
        a, b = files["val"][i], sharded["val"][i]
        assert a["video"] == b["video"] and a["question"] == b["question"]  # the same moments, the same times
        assert a["image"].shape == b["image"].shape and (a["image"] - b["image"]).abs().mean() < 0.1
        assert a["input_ids"].tolist() == b["input_ids"].tolist()
    stream = StreamId(consumer=0, consumers=1, seed=0)
    with seeded(1):
        sample = sharded["train"].stream_item(stream, 0)
    assert sample["image"].shape == files["train"][0]["image"].shape


def test_a_stream_continues_where_a_fresh_reader_would_start(tiny_llm_dir, clips_dir, tmp_path):
    """Reading positions in order and jumping straight to one give the same samples, however many
    consumers share the shards (more consumers than shards: resampled)."""
    from video_llama.datasets.datasets.shard_dataset import StreamId

    anno, shards = round_trip_data(clips_dir, tmp_path)
    _, sharded = build_both(tiny_llm_dir, anno, clips_dir, shards, "datasets.webvid_instruct.build_info.shuffle_buffer=2")
    for consumers in (1, 2, 8):
        stream = StreamId(consumer=consumers - 1, consumers=consumers, seed=0)
        in_order = [sharded["train"].stream_item(stream, p)["video"] for p in range(7)]
        fresh = sharded["train"].__class__(sharded["train"].urls, sharded["train"].counts, sharded["train"].reader,
                                           shuffle_buffer=2)
        assert [fresh.stream_item(stream, p)["video"] for p in (4, 5, 6)] == in_order[4:], consumers


@pytest.mark.multiprocess
def test_two_ranks_train_from_shards_with_more_readers_than_shards(tiny_llm_dir, clips_dir, tmp_path):
    """2 ranks × 2 workers read 3 shards (resampled); both ranks take every step and finish, and
    validation reads the val shards."""
    import os

    from conftest import BATCH_LOG_PLUGIN, TINY_CONFIG, trained_videos

    _, shards = round_trip_data(clips_dir, tmp_path)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "train.py", "--cfg-path", str(TINY_CONFIG),
           "--plugins", str(BATCH_LOG_PLUGIN), "--options", f"model.llama_model={tiny_llm_dir}", f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
           "datasets.webvid_instruct.build_info.anno_dir=null", f"datasets.webvid_instruct.build_info.shards={shards}",
           "datasets.webvid_instruct.vis_processor.train.n_frms=4", f"run.output_dir={tmp_path / 'out'}",
           "run.iters_per_epoch=3", "run.max_epoch=2", "run.num_workers=2", "run.batch_size_train=2",
           "run.valid_splits=[val]", "run.distributed=True", "run.task=batch_logged_video_text_pretrain"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "BATCH_LOG_DIR": str(tmp_path)}
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    first, second = summary["rank_weight_fingerprints"]
    assert first == second and summary["replicas_agree"]
    batches = trained_videos(tmp_path)
    assert sorted(batches) == [0, 1] and len(batches[0]) == len(batches[1]) == 6
    assert batches[0][0] != batches[1][0]  # the ranks read different samples
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert len(evals) == 2 and all(e["val_loss"] > 0 for e in evals)


def test_a_shard_that_breaks_mid_epoch_is_skipped_by_name_and_training_goes_on(tiny_llm_dir, clips_dir, tmp_path):
    """A train shard cut inside its second sample (as a copy interrupted, or a store that drops):
    its first sample trains, the lost one is listed in the run's bad_clips.jsonl, the run finishes."""
    import tarfile

    from conftest import TINY_CONFIG

    from video_llama.common.run_folder import RunFolder, read_bad_clips
    from video_llama.jobs.experiment import train as train_main

    _, shards = round_trip_data(clips_dir, tmp_path)
    shard = shards / "train-000001.tar"
    with tarfile.open(shard) as tar:
        last = tar.getmembers()[-1]  # the second sample's last member
    shard.write_bytes(shard.read_bytes()[:last.offset_data + 100])
    summary = train_main(["--cfg-path", str(TINY_CONFIG), "--options", f"model.llama_model={tiny_llm_dir}",
                          f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
                          "datasets.webvid_instruct.build_info.anno_dir=null",
                          f"datasets.webvid_instruct.build_info.shards={shards}",
                          "datasets.webvid_instruct.vis_processor.train.n_frms=4", f"run.output_dir={tmp_path / 'out'}",
                          "run.iters_per_epoch=3", "run.max_epoch=2", "run.num_workers=2", "run.batch_size_train=2"])
    assert summary["steps"] == 6 and summary["bad_clips"] >= 1
    lost = read_bad_clips(RunFolder(summary["run_dir"]).bad_clips)
    assert {e["clip"] for e in lost} == {f"{shard}:lost sample 1"}
    assert all("train-000001.tar" in e["error"] for e in lost)


def export_cli(anno, videos, out, *extra):
    return [sys.executable, "-m", "video_llama.cli.main", "export-shards", "--anno", str(anno), "--videos-dir", str(videos),
            "--out", str(out), *extra]


@pytest.mark.slow
def test_reencoded_shards_decode_small_and_do_not_depend_on_the_workers(clips_dir, tmp_path):
    import webdataset as wds

    from video_llama.datasets.datasets.shard_dataset import stored_clip
    from video_llama.processors.video_decoding import KeyframeVideo, load_video, probe_video

    anno = prepare_folder(clips_dir, tmp_path)
    for workers in ("1", "2"):
        result = subprocess.run(export_cli(anno, clips_dir, tmp_path / workers, "--samples-per-shard", "2",
                                           "--reencode", "32@4", "--workers", workers),
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar", "index.json"):
        assert digest(tmp_path / "1" / name) == digest(tmp_path / "2" / name), name
    index = json.loads((tmp_path / "2" / "index.json").read_text())
    assert index["made_with"]["content"] == "re-encoded 32@4" and index["splits"]["train"]["samples"] == [2, 1, 1]
    sample = next(iter(wds.WebDataset(str(tmp_path / "2" / "train-000000.tar"), shardshuffle=False, nodesplitter=None)))
    meta, source = stored_clip(sample, "train-000000.tar")
    assert meta["keyframes_only"] and isinstance(source, KeyframeVideo)  # read by decoding the sampled frames alone
    assert (meta["num_frames"], meta["fps"]) == (12, 4) == probe_video(sample["mp4"])  # 24 frames at 8 fps → 12 at 4
    clip = load_video(source, 8, 32, 32)
    assert torch.equal(clip.frames, load_video(sample["mp4"], 8, 32, 32, backend="decord").frames)
    original = load_video(clips_dir / meta["video"], 8, 32, 32)
    assert clip.frames.shape == original.frames.shape == (3, 8, 32, 32)
    # brightness encodes the frame index in these clips: the re-encoded frames are the same moments
    assert (clip.frames[0].float().mean((1, 2)) - original.frames[0].float().mean((1, 2))).abs().max() < 24


@pytest.mark.slow
def test_a_killed_export_rerun_gives_the_same_shards(clips_dir, tmp_path):
    import signal
    import time

    anno = prepare_folder(clips_dir, tmp_path)
    entries = json.loads((anno / "train.json").read_text())
    (anno / "train.json").write_text(json.dumps(entries * 10))  # 60 shards: time to kill it half-way
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(export_cli(anno, clips_dir, whole, "--samples-per-shard", "1"), cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=300)
    process = subprocess.Popen(export_cli(anno, clips_dir, cut, "--samples-per-shard", "1"), cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (cut / "train-000001.tar").exists() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (cut / "train-000001.tar").exists() and not (cut / "index.json").exists()  # killed half-way
    subprocess.run(export_cli(anno, clips_dir, cut, "--samples-per-shard", "1"), cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=300)
    names = sorted(p.name for p in whole.iterdir())
    assert sorted(p.name for p in cut.iterdir()) == names
    for name in names:
        assert digest(cut / name) == digest(whole / name), name


def test_shard_problems_name_the_shard_and_the_fix(tiny_llm_dir, clips_dir, tmp_path):
    import pytest

    from video_llama.common.errors import UserError
    from video_llama.datasets.datasets.shard_dataset import shard_counts, shard_splits

    anno, shards = round_trip_data(clips_dir, tmp_path)
    _, sharded = build_both(tiny_llm_dir, anno, clips_dir, shards)
    order = [sharded["val"][i]["video"] for i in range(3)]
    assert [sharded["val"][i]["video"] for i in (2, 0, 1)] == [order[2], order[0], order[1]]  # any order reads
    assert shard_counts([str(shards / "train-000001.tar")], index=None) == [2]  # from index.json
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(shards / "train-000001.tar", alone / "x.tar")
    assert shard_counts([str(alone / "x.tar")]) == [2]  # counted from the tar's headers
    with pytest.raises(UserError, match="no index.json"):
        shard_splits(str(alone))
    with pytest.raises(UserError, match="build_info.shard_index"):
        shard_counts(["https://example.org/train-000000.tar"])
    (alone / "cut.tar").write_bytes((shards / "train-000001.tar").read_bytes()[:3000])
    broken = sharded["train"].__class__([str(alone / "cut.tar")], [2], sharded["train"].reader)
    lost = [broken[i] for i in range(2)]  # a shard that breaks: its samples are unreadable ones, named
    assert all("cut.tar" in sample["unreadable"] and "cut.tar" in sample["error"] for sample in lost), lost
    longer = sharded["train"].__class__([str(shards / "train-000001.tar")], [1], sharded["train"].reader)
    with pytest.raises(UserError, match="holds more samples than the 1 its index says"):
        longer.records  # noqa: B018  (reads every shard through)
    with pytest.raises(UserError, match="both shards and anno_dir"):
        build_both(tiny_llm_dir, anno, clips_dir, shards, f"datasets.webvid_instruct.build_info.anno_dir={anno}")


def test_an_export_into_a_folder_of_other_shards_is_refused_or_replaced_never_mixed(clips_dir, tmp_path):
    from video_llama.common.errors import UserError
    from video_llama.data_tools.shards import export_shards

    anno = prepare_folder(clips_dir, tmp_path)
    out = tmp_path / "shards"
    export_shards(anno, clips_dir, out, samples_per_shard=2, progress=False)
    before = {p.name: digest(p) for p in out.glob("*.tar")}
    with pytest.raises(UserError, match=r"holds 4 shard\(s\) made with other settings \(samples_per_shard: 2 then, "
                                        r"1 now\).*--overwrite"):
        export_shards(anno, clips_dir, out, samples_per_shard=1, progress=False)
    assert {p.name: digest(p) for p in out.glob("*.tar")} == before  # nothing written, nothing lost
    index = export_shards(anno, clips_dir, out, samples_per_shard=1, progress=False, overwrite=True)
    listed = {name for entry in index["splits"].values() for name in entry["shards"]}
    assert {p.name for p in out.glob("*.tar")} == listed and len(listed) == 8  # only the new export's shards
    assert json.loads((out / "index.json").read_text())["made_with"]["samples_per_shard"] == 1
    export_shards(anno, clips_dir, out, samples_per_shard=1, progress=False)  # the same settings: it resumes
    records = json.loads((anno / "train.json").read_text())
    (anno / "train.json").write_text(json.dumps(records[:3]))  # the same settings, fewer records
    index = export_shards(anno, clips_dir, out, samples_per_shard=1, progress=False)
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(n for e in index["splits"].values() for n in e["shards"])
    assert len(index["splits"]["train"]["shards"]) == 3
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match="a_file is a file; give a folder"):
        export_shards(anno, clips_dir, tmp_path / "a_file", progress=False)
