"""From frames to a robot's mode: hysteresis on fixed decisions, the selector on frames whose
brightness says the class (a stand-in model), and `select-mode` end to end on the tiny model."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from video_llama.tasks.mode_selection import Hysteresis, ModeSelector, SelectorSettings

from conftest import REPO_ROOT, TINY_CONFIG


def smoothed(decisions, hold, evidence=None):
    smoother = Hysteresis(hold, evidence)
    return [smoother.update(mode, margin) or smoother.current for mode, margin in decisions]


def test_hysteresis_removes_one_window_flickers_and_keeps_real_changes():
    flicker = [("a", 0.9)] * 3 + [("b", 0.9)] + [("a", 0.9)] * 3 + [("b", 0.9)] * 3
    assert smoothed(flicker, hold=2) == [None, "a", "a", "a", "a", "a", "a", "a", "b", "b"]
    assert smoothed(flicker, hold=1)[3] == "b"  # without smoothing the flicker switches
    # a confident change switches after one window once the summed margin reaches the evidence
    assert smoothed([("a", 0.3)] * 3 + [("b", 0.9), ("b", 0.9)], hold=3, evidence=0.8) == [None, None, "a", "b", "b"]
    assert smoothed([("a", 0.1), ("unknown", 0.0), ("unknown", 0.0)], hold=2)[-1] == "unknown"
    with pytest.raises(ValueError, match="at least 1"):
        Hysteresis(0)


class BrightnessModel:
    """Scores label i by how close the clip's mean brightness is to i / (labels - 1)."""

    device = torch.device("cpu")

    def score(self, frames, questions, labels, length_normalize=False):
        level = frames.mean().item()
        return torch.tensor([[-40.0 * abs(level - i / (len(labels) - 1)) for i in range(len(labels))]])


class Identity:
    def apply(self, clip):
        return clip.float() / 255


def test_selector_decides_abstains_maps_labels_and_smooths():
    labels = ["wave", "wipe", "idle"]  # brightness 0, 0.5, 1
    selector = ModeSelector(BrightnessModel(), labels, "q", Identity(), n_frms=4,
                            label_map={"wave": "greet_mode", "wipe": "clean_mode"},
                            settings=SelectorSettings(window_s=1.0, stride_s=0.5, threshold=0.9, hold=2))
    level = [0] * 20 + [128] * 20 + [255] * 4 + [0] * 20  # 10 fps: 2 s dark, 2 s mid, 0.4 s bright, 2 s dark
    events = [e for i, v in enumerate(level) for e in selector.push(i / 10, np.full((8, 8, 3), v, np.uint8))]
    decisions = [e for e in events if "event" not in e]
    changes = [(e["from"], e["to"]) for e in events if "event" in e]
    assert [d["t_end"] for d in decisions] == sorted(d["t_end"] for d in decisions)
    assert set(decisions[0]["probs"]) == {"greet_mode", "clean_mode", "idle"}  # modes, not labels
    assert any(not d["decided"] for d in decisions)  # windows straddling a change are not sure
    assert changes[:2] == [(None, "greet_mode"), ("greet_mode", "clean_mode")]
    assert "idle" not in [to for _, to in changes]  # 0.4 s of bright: no window holds it twice
    assert selector.current == "greet_mode"


@pytest.fixture(scope="module")
def long_clip(clips_dir, tmp_path_factory):
    from video_llama.data_tools.video_writer import write_video

    from conftest import gradient_clip

    path = tmp_path_factory.mktemp("stream") / "long.mp4"
    write_video(path, np.concatenate([gradient_clip(24, seed=i) for i in range(4)]))  # 12 s at 8 fps
    return path


def select_mode(tiny_llm_dir, clips_dir, *args):
    from video_llama.cli.main import main

    return main(["select-mode", "--cfg-path", str(TINY_CONFIG), "--options", f"model.llama_model={tiny_llm_dir}",
                 f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
                 f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
                 "model.ckpt=random", "run.labels=[greet_mode,clean_mode]", "run.device=cpu", *args])


def events_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_select_mode_writes_well_formed_events_over_a_video(tiny_llm_dir, clips_dir, long_clip, tmp_path, capsys):
    out = tmp_path / "events.jsonl"
    assert select_mode(tiny_llm_dir, clips_dir, "--video", str(long_clip), "--window-s", "2", "--stride-s", "1",
                       "--out", str(out)) == 0
    events = events_of(out)
    decisions = [e for e in events if "event" not in e]
    assert len(decisions) == 10  # windows ending at 2, 3, ..., 11 s of a 12 s clip (last frame at 11.875 s)
    assert [d["t_end"] for d in decisions] == sorted(d["t_end"] for d in decisions) == [2.0 + i for i in range(10)]
    assert all(set(d) >= {"t_start", "t_end", "mode", "p", "decided", "latency_ms", "current"} for d in decisions)
    assert all(d["t_end"] - d["t_start"] == pytest.approx(2.0, abs=0.13) and 0 <= d["p"] <= 1 for d in decisions)
    chain = [(e["from"], e["to"]) for e in events if e.get("event") == "mode_change"]
    assert chain and chain[0][0] is None and all(a[1] == b[0] for a, b in zip(chain, chain[1:]))
    assert "10 decisions over 11.9 s of video" in capsys.readouterr().out


def test_select_mode_on_a_broken_file_says_so_in_one_line(tiny_llm_dir, clips_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        select_mode(tiny_llm_dir, clips_dir, "--video", str(clips_dir / "broken.mp4"), "--out", str(tmp_path / "e.jsonl"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: cannot open") and "broken.mp4" in err[0]


@pytest.mark.parametrize("ending", ["interrupted", "broke off"])
def test_an_interrupted_stream_ends_cleanly_with_its_decisions_flushed(tiny_llm_dir, clips_dir, long_clip, tmp_path,
                                                                       monkeypatch, capsys, ending):
    from video_llama.processors import frame_stream

    real = frame_stream.stream_frames

    def cut(source, size, **kwargs):  # 6 s of the clip, then Ctrl-C or a dropped connection
        for t, frame in real(source, size, **kwargs):
            if t >= 6.0:
                raise KeyboardInterrupt if ending == "interrupted" else frame_stream.StreamBrokeOff("link down", t)
            yield t, frame

    monkeypatch.setattr(frame_stream, "stream_frames", cut)
    out = tmp_path / "events.jsonl"
    code = select_mode(tiny_llm_dir, clips_dir, "--video", str(long_clip), "--stride-s", "1", "--out", str(out))
    decisions = [e for e in events_of(out) if "event" not in e]  # every line complete JSON
    assert [d["t_end"] for d in decisions] == [2.0, 3.0, 4.0, 5.0, 6.0][:len(decisions)] and len(decisions) >= 4
    captured = capsys.readouterr()
    if ending == "interrupted":
        assert code == 0 and "(stopped by SIGINT)" in captured.out
    else:
        assert code == 1 and "link down" in captured.err and str(out) in captured.err


def test_the_prepare_label_map_turns_labels_into_modes():
    """The map `prepare --label-map` takes (folder → mode) maps the labels written from those folder
    names; a label that already is a mode (data prepared with the map) stays itself."""
    from video_llama.tasks.mode_selection import label_modes

    folders = {"to_and_fro": "greet_mode", "wipe_glass": "clean_mode"}
    assert label_modes(["To and fro", "Wipe glass", "idle_mode"], folders) == {
        "To and fro": "greet_mode", "Wipe glass": "clean_mode", "idle_mode": "idle_mode"}
    assert label_modes(["a"], None) == {"a": "a"}


def test_a_gap_longer_than_a_window_starts_the_window_afresh():
    """A reconnected stream resumes after a gap: no decision may mix frames from both sides of it."""
    selector = ModeSelector(BrightnessModel(), ["dark", "bright"], "q", Identity(), n_frms=4,
                            settings=SelectorSettings(window_s=1.0, stride_s=0.5, hold=1))
    frames = [(i / 10, 0) for i in range(30)] + [(10 + i / 10, 255) for i in range(30)]  # 3 s dark, 7 s gap, 3 s bright
    decisions = [e for t, v in frames for e in selector.push(t, np.full((8, 8, 3), v, np.uint8)) if "event" not in e]
    assert all(d["t_end"] < 3 or d["t_start"] >= 10 for d in decisions)
    assert [d["t_end"] for d in decisions if d["t_end"] >= 10][0] == 11.0  # a whole window after the gap
    assert all(d["t_end"] - d["t_start"] == pytest.approx(1.0, abs=0.11) for d in decisions)
    assert [d["mode"] for d in decisions if d["t_end"] >= 10] == ["bright"] * 4


@pytest.mark.parametrize("config_window_s", [None, 1.0])
def test_select_mode_takes_the_processors_window_and_says_why_it_decided_nothing(tiny_llm_dir, clips_dir, tmp_path,
                                                                                 capsys, config_window_s):
    from video_llama.data_tools.video_writer import write_video

    from conftest import gradient_clip

    short = tmp_path / "short.mp4"
    write_video(short, gradient_clip(12))  # 1.5 s at 8 fps
    window = [f"datasets.webvid_instruct.vis_processor.eval.window_s={config_window_s}"] if config_window_s else []
    assert select_mode(tiny_llm_dir, clips_dir, *window, "--video", str(short), "--out", "-") == 0
    captured = capsys.readouterr()
    decisions = [e for e in map(json.loads, captured.out.splitlines()) if "event" not in e]  # stdout: events only
    if config_window_s is None:  # the default window is 2 s: longer than the video
        assert decisions == []
        assert "no decision: the video holds 12 frame(s) over 1.4 s, less than one 2 s window" in captured.err
    else:  # the model was trained on 1 s windows: so are its decisions
        assert [(d["t_start"], d["t_end"]) for d in decisions] == [(0.0, 1.0)]
        assert "1 decisions over 1.4 s of video" in captured.err and "events in stdout" in captured.err


def one_client_at_a_time(monkeypatch):
    """select-mode checks a live source before loading the model, then connects again; the test
    camera serves one client at a time (a real one, many): the check waits until it listens again."""
    import time

    from video_llama.processors import frame_stream

    from test_frame_stream import listening

    check = frame_stream.check_source

    def check_then_wait(source, timeout_s):
        check(source, timeout_s)
        while not listening(int(source.rsplit(":", 1)[1])):
            time.sleep(0.02)

    monkeypatch.setattr(frame_stream, "check_source", check_then_wait)


@pytest.mark.slow
def test_select_mode_on_a_live_stream_pipes_its_events_and_ends_a_stall_with_exit_3(tiny_llm_dir, clips_dir,
                                                                                     monkeypatch, capsys):
    from test_frame_stream import camera

    one_client_at_a_time(monkeypatch)
    threads = torch.get_num_threads()
    try:
        with camera("25:close", "50:stall") as url:  # select-mode's check of the source, then 2 s and silence
            code = select_mode(tiny_llm_dir, clips_dir, "run.cpu_threads=1", "--stream", url, "--stall-s", "1",
                               "--window-s", "1", "--out", "-")
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]  # stdout holds events only, each whole
    decisions = [e for e in events if "event" not in e]
    assert code == 3 and len(decisions) >= 2 and decisions[0]["t_end"] == 1.0
    assert [d["t_end"] for d in decisions] == sorted(d["t_end"] for d in decisions)
    assert f"error: {url}: no frame for 1.0 s; the {len(events)} event(s) decided before are in stdout" in captured.err
    assert used == 1  # run.cpu_threads, as training sets it: a selector beside other work keeps its latency


@pytest.mark.slow
def test_select_mode_reconnects_and_decides_on_no_window_across_the_gap(tiny_llm_dir, clips_dir, tmp_path,
                                                                        monkeypatch, capsys):
    from test_frame_stream import camera

    one_client_at_a_time(monkeypatch)
    out = tmp_path / "events.jsonl"
    with camera("25:close", "38:close", "50:close") as url:  # the check; 1.5 s; a gap; 2 s; then gone
        code = select_mode(tiny_llm_dir, clips_dir, "--stream", url, "--reconnect", "--reconnect-max-s", "1",
                           "--window-s", "1", "--out", str(out))
    decisions = [e for e in events_of(out) if "event" not in e]
    before, after = [d for d in decisions if d["t_end"] <= 1.48], [d for d in decisions if d["t_end"] > 1.48]
    assert before and after and all(d["t_start"] > 1.48 for d in after)  # the last frame before the gap: 1.48 s
    assert after[0]["t_end"] - after[0]["t_start"] == pytest.approx(1.0, abs=0.05)  # a whole window after it
    assert code == 1 and "gave up reconnecting after 1 s" in capsys.readouterr().err


@pytest.mark.slow
def test_a_reader_that_closes_the_events_pipe_ends_the_run_without_a_traceback(tiny_llm_dir, clips_dir):
    """`select-mode ... --out - | head -n 2`: when the controller stops reading, the selector stops
    cleanly (exit 0, a summary on stderr), as it does on a signal."""
    cmd = [sys.executable, "-m", "video_llama.cli.main", "select-mode", "--cfg-path", str(TINY_CONFIG), "--options",
           f"model.llama_model={tiny_llm_dir}", f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
           f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}", "model.ckpt=random",
           "run.labels=[greet_mode,clean_mode]", "run.device=cpu", "run.cpu_threads=1",
           "--video", str(clips_dir / "clip0.mp4"), "--window-s", "0.5", "--stride-s", "0.1", "--out", "-"]
    selector = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = selector.stdout.readline()
    selector.stdout.close()  # the reader goes away after one line
    err = selector.stderr.read()
    assert selector.wait(timeout=120) == 0, err
    assert json.loads(first)["t_end"] > 0
    assert "Traceback" not in err and "the reader of the events closed the pipe" in err
