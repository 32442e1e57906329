"""export-shards: WebDataset tars of the original bytes, reproducible, resumable, bad clips named."""

import hashlib
import json
import shutil
import subprocess
import sys

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
    from video_llama.cli.export_shards import export_shards

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
