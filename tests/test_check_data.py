"""`video-llama check-data`: every clip probed with training's decoders, problems named per file,
a quarantine list that training and export honour."""

import json
import os
import shutil

import pytest

from conftest import gradient_clip, tiny_config
from video_llama.data_tools.video_writer import write_video


def write_uneven_clip(path):
    """16 frames whose times step 40 ms, then 120 ms (a variable frame rate, as phones record)."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, frame in enumerate(gradient_clip(16, seed=7)):
            image = av.VideoFrame.from_ndarray(frame, format="rgb24")
            image.pts, image.time_base = (i * 40 if i < 8 else 280 + (i - 8) * 120), Fraction(1, 1000)
            container.mux(stream.encode(image))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def mixed_data(clips_dir, tmp_path_factory):
    """The test clips plus every kind of problem check-data names, in one annotation file."""
    root = tmp_path_factory.mktemp("mixed")
    for name in ("clip0.mp4", "clip1.mp4", "clip2.mp4", "short.avi", "broken.mp4"):
        shutil.copy(clips_dir / name, root / name)
    shutil.copy(clips_dir / "clip0.mp4", root / "copy_of_clip0.mp4")  # the same bytes
    (root / "empty.mp4").write_bytes(b"")
    os.mkfifo(root / "pipe.mp4")  # opening it would block until a writer comes
    write_video(root / "long_gop.mp4", gradient_clip(96, seed=5), fps=8, gop=96)  # one keyframe in 12 s
    write_uneven_clip(root / "uneven.mkv")
    names = ["clip0.mp4", "clip1.mp4", "clip2.mp4", "copy_of_clip0.mp4", "short.avi", "broken.mp4", "empty.mp4",
             "pipe.mp4", "nowhere.mp4", "long_gop.mp4", "uneven.mkv"]
    answers = ["greet_mode", "clean_mode", "Greet-Mode"]  # the third reads like the first
    entries = [{"video": n, "QA": [{"q": "What is the action?", "a": answers[i % 3]}]} for i, n in enumerate(names)]
    (root / "train.json").write_text(json.dumps(entries))
    return root


def test_check_data_names_each_problem_and_writes_a_quarantine_list(mixed_data, tmp_path, capsys):
    from video_llama.cli.check_data import main

    assert main(["--anno", str(mixed_data / "train.json"), "--videos-dir", str(mixed_data), "--out",
                 str(tmp_path / "report.json"), "--n-frms", "8", "--workers", "2"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    found = {p["video"]: p["problem"] for p in report["problems"]}
    assert found == {"short.avi": "too short", "broken.mp4": "unreadable", "empty.mp4": "empty",
                     "pipe.mp4": "not a regular file", "nowhere.mp4": "missing"}
    assert report["checked"] == 11 and report["files_per_s"] > 0
    notes = {n["video"]: n["note"] for n in report["notes"]}  # usable: noted, not quarantined
    assert notes == {"long_gop.mp4": "slow to seek", "uneven.mkv": "variable frame rate"}, report["notes"]
    assert report["duplicates"] == [["clip0.mp4", "copy_of_clip0.mp4"]]  # reported, not quarantined
    assert report["colliding_labels"] == [["Greet-Mode", "greet_mode"]]
    quarantine = (tmp_path / "quarantine.txt").read_text().split()
    assert sorted(quarantine) == sorted(found)
    out = capsys.readouterr().out
    assert "not a regular file: pipe.mp4" in out and "checked 11 clips" in out and "files/s" in out
    assert "note, slow to seek: long_gop.mp4: keyframes up to 11.9 s apart" in out


def test_a_clip_whose_check_blocks_is_reported_timed_out(mixed_data, tmp_path, monkeypatch):
    """A FIFO let through to the reads (as a file on a stalled mount blocks them): the check of that
    clip is abandoned at its deadline and reported; the others are checked as before."""
    from video_llama.data_tools import check_data

    monkeypatch.setattr(check_data, "file_problem", lambda path: None)  # the pool's workers fork with it
    report = check_data.check_data(mixed_data / "train.json", mixed_data, workers=2, progress=False,
                                   decode_timeout_s=0.5)
    found = {p["video"]: (p["problem"], p["detail"]) for p in report["problems"]}
    assert found["pipe.mp4"][0] == "timed out" and "took longer than 0.5 s" in found["pipe.mp4"][1]
    assert found["broken.mp4"][0] == "unreadable" and "pipe.mp4" in report["quarantine"]


def test_training_and_export_leave_out_the_quarantined_clips(mixed_data, tiny_llm_dir, tmp_path):
    from video_llama.common.registry import registry
    from video_llama.data_tools.shards import export_shards

    quarantine = tmp_path / "quarantine.txt"
    quarantine.write_text("# from check-data\nshort.avi\nbroken.mp4\nempty.mp4\npipe.mp4\nnowhere.mp4\n")
    cfg = tiny_config(tiny_llm_dir, mixed_data / "train.json", mixed_data,
                      f"datasets.webvid_instruct.build_info.quarantine={quarantine}")
    train = registry.get_builder_class("webvid_instruct")(cfg.datasets_cfg.webvid_instruct).build_datasets()["train"]
    usable = ["clip0.mp4", "clip1.mp4", "clip2.mp4", "copy_of_clip0.mp4", "long_gop.mp4", "uneven.mkv"]
    assert sorted(r["video"] for r in train.records) == usable
    index = export_shards(mixed_data / "train.json", mixed_data, tmp_path / "shards", progress=False, quarantine=quarantine)
    assert index["splits"]["train"]["total"] == len(usable)  # the FIFO was never opened: the export did not block
    assert {item["video"] for item in index["left_out"]} == {"short.avi", "broken.mp4", "empty.mp4", "pipe.mp4",
                                                             "nowhere.mp4"}
    unquarantined = export_shards(mixed_data / "train.json", mixed_data, tmp_path / "all", progress=False)
    why = {item["video"]: item["why"] for item in unquarantined["left_out"]}
    assert "is a FIFO, not a regular file" in why["pipe.mp4"]  # named, never opened: no hang
    missing = tiny_config(tiny_llm_dir, mixed_data / "train.json", mixed_data,
                          f"datasets.webvid_instruct.build_info.quarantine={tmp_path / 'none.txt'}")
    from video_llama.common.errors import UserError

    with pytest.raises(UserError, match="none.txt does not exist.*check-data"):
        registry.get_builder_class("webvid_instruct")(missing.datasets_cfg.webvid_instruct).build_datasets()


def test_a_quarantine_beside_shards_is_refused_at_start_up(mixed_data, tiny_llm_dir, tmp_path):
    from video_llama.common.config import ConfigError

    with pytest.raises(ConfigError, match="quarantine applies to annotation files, not to shards.*export-shards"):
        tiny_config(tiny_llm_dir, "null", "null", f"datasets.webvid_instruct.build_info.shards={tmp_path}/s-000000.tar",
                    f"datasets.webvid_instruct.build_info.quarantine={tmp_path / 'quarantine.txt'}")


@pytest.mark.slow
def test_damaged_videos_are_named_by_every_reader_never_a_traceback_or_a_hang(tmp_path):
    """A small fuzz set (every kind of damage of benchmarks/fuzz_videos.py, once or twice) through
    training's decoding, check-data and select-mode's reader, each file in a child process that is
    watched for crashes and hangs; and a decoder blocked forever, abandoned and named."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    result = subprocess.run([sys.executable, "benchmarks/fuzz_videos.py", "--out", str(tmp_path / "fuzz"), "--count", "20",
                             "--hang-s", "60"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "fuzz" / "fuzz_report.json").read_text())
    for reader, rows in report["readers"].items():
        assert len(rows) == len(report["files"]) >= 20, reader
        assert {row["outcome"] for row in rows} <= {"ok", "named"}, reader
        assert sum(row["outcome"] == "named" for row in rows) >= 10, reader  # most of the damage is found
    assert report["check_data_cli"]["exit"] == 0 and "checked" in report["check_data_cli"]["summary"]
    assert "blocked.mp4 took longer than 2.0 s (decode_timeout_s)" in report["blocked_decoder"]["message"]
