"""Chatting with sound: a model with the audio branch hears a clip's soundtrack (or a separate sound
file), its prompt holds the audio tokens before the video's, a clip without sound is answered from
its frames and the chat, the terminal, infer and the web status say which it was."""

import json
import logging
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_CONFIG, gradient_clip
from test_demo import demo_options

SHORT = {"max_new_tokens": 4}
WITH_AUDIO = ["model.equip_audio_branch=True", "model.imagebind_ckpt_path=random"]  # ckpt=random: all random


def tone(hz, seconds=3.0, rate=44100):
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)


@pytest.fixture(scope="module")
def sound_clips(tmp_path_factory):
    from video_llama.data_tools.video_writer import write_video

    folder = tmp_path_factory.mktemp("sound_clips")
    write_video(folder / "low.mp4", gradient_clip(24), sound=tone(300))
    write_video(folder / "high.mp4", gradient_clip(24), sound=tone(3000))  # the same frames, another sound
    write_video(folder / "silent.mp4", gradient_clip(24))
    with wave.open(str(folder / "bell.wav"), "wb") as sink:  # a sound file of its own
        sink.setnchannels(1), sink.setsampwidth(2), sink.setframerate(16000)
        sink.writeframes((tone(1000, rate=16000) * 32767).astype(np.int16).tobytes())
    return folder


@pytest.fixture(scope="module")
def setup(tiny_llm_dir, clips_dir):
    from video_llama.jobs.chat import load_setup

    return load_setup(TINY_CONFIG, [*demo_options(tiny_llm_dir, clips_dir), *WITH_AUDIO])


def test_a_clip_with_sound_is_heard_and_its_audio_tokens_come_first(setup, sound_clips):
    from video_llama.conversation.templates import SOUND_PROMPT

    model = setup.model
    chat = setup.new_chat()
    chat.upload_video(sound_clips / "low.mp4")
    assert chat.visual.sound.shape == (8, 1, 128, 204)
    assert chat.visual.hearing == "hearing the soundtrack (8 clips of 2 s)"
    answer = chat.ask("What do you hear?", **SHORT)
    assert isinstance(answer, str) and chat.history == [("What do you hear?", answer)]

    ids = model.prompt_ids("What do you hear?", sound=True)
    patch = model.im_patch_token_id
    runs = [len(run) for run in "".join("p" if i == patch else " " for i in ids).split()]
    assert runs == [model.cfg.num_audio_query_token, model.num_video_query_token]  # audio placeholders, then video
    text = model.llama_tokenizer.decode(ids)
    assert SOUND_PROMPT.split("{audio}")[0].strip() in text and text.index("<Video>") > text.index("open your ears")

    frames = chat.visual.frames.unsqueeze(0)
    sounds = [setup.sound_processor(sound_clips / name).unsqueeze(0) for name in ("low.mp4", "high.mp4")]
    low, high = (model.score(frames, ["What do you hear?"], ["a bell", "a drum"], sound=s) for s in sounds)
    assert not torch.allclose(low, high)  # the same frames and prompt: the answer depends on the sound


def test_a_clip_without_sound_is_answered_from_its_frames_and_says_so(setup, sound_clips, caplog):
    chat = setup.new_chat()
    with caplog.at_level(logging.WARNING):
        chat.upload_video(sound_clips / "silent.mp4")
    assert chat.visual.sound is None
    assert chat.visual.hearing == (f"no sound ({sound_clips / 'silent.mp4'} has no audio stream): answering from "
                                   "the frames alone")
    chat.ask("What happens?", **SHORT)
    chat.ask("And then?", **SHORT)
    assert [r.getMessage() for r in caplog.records if "no sound" in r.getMessage()] == [chat.visual.hearing]  # once
    ids = setup.model.prompt_ids("What happens?")
    assert ids.count(setup.model.im_patch_token_id) == setup.model.num_video_query_token


def test_a_separate_sound_file_is_heard_instead(setup, sound_clips, tiny_llm_dir, clips_dir):
    from video_llama.conversation.chat import ChatError
    from video_llama.jobs.chat import load_setup

    chat = setup.new_chat()
    chat.upload_video(sound_clips / "silent.mp4", sound_path=sound_clips / "bell.wav")
    assert chat.visual.sound.shape == (8, 1, 128, 204) and chat.visual.hearing.startswith(f"hearing {sound_clips / 'bell.wav'}")
    with pytest.raises(ChatError, match="no sound to hear in .*silent.mp4: .* has no audio stream"):
        chat.upload_video(sound_clips / "low.mp4", sound_path=sound_clips / "silent.mp4")
    vision_only = load_setup(TINY_CONFIG, demo_options(tiny_llm_dir, clips_dir)).new_chat()
    with pytest.raises(ChatError, match="no audio branch"):
        vision_only.upload_video(sound_clips / "low.mp4", sound_path=sound_clips / "bell.wav")
    vision_only.upload_video(sound_clips / "low.mp4")
    assert vision_only.visual.sound is None and vision_only.visual.hearing == ""  # it never listens


def test_the_original_demo_asks_about_sound_without_its_system_prompt(setup, sound_clips):
    from video_llama.conversation.templates import SOUND_PROMPT

    from dataclasses import replace

    chat = replace(setup, prompt_style="original_demo").new_chat()
    chat.upload_video(sound_clips / "low.mp4")
    history, question = chat._turns("What do you hear?", 4)
    assert question == "What do you hear?"  # the original: its sentence about sound, a space, the question
    text = setup.model.llama_tokenizer.decode(setup.model.prompt_ids(question, history, template=chat.template, sound=True),
                                              skip_special_tokens=True)
    opening = SOUND_PROMPT.split("{audio}")[0].strip()
    assert text.startswith("[INST] <<SYS>>\n\n<</SYS>>\n\n" + opening) and text.endswith("heard. What do you hear? [/INST]")


def test_infer_and_the_terminal_say_which_clips_were_heard(setup, sound_clips, tmp_path):
    import io

    from video_llama.cli.demo import terminal_chat
    from video_llama.jobs.infer import infer

    jobs = [(str(sound_clips / name), "What happens?", None) for name in ("low.mp4", "silent.mp4", "high.mp4")]
    out = tmp_path / "answers.jsonl"
    assert infer(setup, jobs, out, batch_size=3, max_new_tokens=3, progress=False) == (3, 0, 0)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["video"] for line in lines] == [job[0] for job in jobs]  # in order, though answered in two groups
    assert [line["sound"] for line in lines] == [True, False, True]
    chat = setup.new_chat()  # infer asks as the chat does
    chat.upload_video(jobs[2][0])
    assert chat.ask("What happens?", max_new_tokens=3) == lines[2]["answer"]

    printed, bell = io.StringIO(), sound_clips / "bell.wav"
    lines = f"/video {jobs[0][0]}\n/video {jobs[1][0]}\n/video {jobs[1][0]} '{bell}'\n/video {jobs[1][0]} 'unclosed\n/quit\n"
    terminal_chat(setup.new_chat(), SHORT, io.StringIO(lines), printed)
    said = [line for line in printed.getvalue().splitlines() if line.startswith(("sound: ", "error: "))]
    assert said == ["sound: hearing the soundtrack (8 clips of 2 s)",
                    f"sound: no sound ({jobs[1][0]} has no audio stream): answering from the frames alone",
                    f"sound: hearing {bell} (8 clips of 2 s)", said[3]]
    assert said[3].startswith("error: cannot read the paths in") and "No closing quotation" in said[3]


def test_the_web_demo_status_says_whether_sound_was_used(setup, sound_clips):
    pytest.importorskip("gradio", reason="the web demo needs gradio (pip install -e '.[test]')")
    from video_llama.jobs.web_demo import build_app

    upload = next(f.fn for f in build_app(setup).fns.values() if f.name == "upload")
    _, _, status, _, _ = upload(str(sound_clips / "low.mp4"), None, None)
    assert status == "Now talking about **low.mp4**. Ask a question.\n\n**Sound**: hearing the soundtrack (8 clips of 2 s)"
    _, _, status, _, _ = upload(str(sound_clips / "silent.mp4"), None, None)
    assert status.endswith("**Sound**: no sound (silent.mp4 has no audio stream): answering from the frames alone")


def test_select_mode_hears_each_window_and_decides_unheard_ones_from_the_frames(tiny_llm_dir, clips_dir, tmp_path,
                                                                                 caplog):
    """The same 12 s of frames with a low or a high tone for their first 6 s: windows up to 6 s are
    heard (asked with the sound prompt: other scores than --no-sound's), windows from 8 s on are not
    and are decided alike, whatever sound came before, and as --no-sound decides them. (That the
    scores follow the sound itself, at one prompt: the chat test above.) A high temperature keeps
    the probabilities off 0 and 1, where rounding would hide differences."""
    from video_llama.cli.main import main
    from video_llama.data_tools.video_writer import write_video

    frames = np.concatenate([gradient_clip(24, seed=i) for i in range(4)])
    runs = {}
    for name, hz, extra in (("low", 300, []), ("high", 3000, []), ("deaf", 300, ["--no-sound"])):
        clip = write_video(tmp_path / f"{name}.mp4", frames, sound=tone(hz, seconds=6.0))
        out = tmp_path / f"{name}.jsonl"
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="video_llama.tasks.mode_selection"):
            assert main(["select-mode", "--cfg-path", str(TINY_CONFIG), "--options",
                         *demo_options(tiny_llm_dir, clips_dir), *WITH_AUDIO, "run.labels=[greet_mode,clean_mode]",
                         "run.device=cpu", "--video", str(clip), "--window-s", "2", "--stride-s", "1",
                         "--temperature", "50", "--out", str(out), *extra]) == 0
        runs[name] = {e["t_end"]: e for e in map(json.loads, out.read_text().splitlines()) if "event" not in e}
        runs[name, "said"] = [r.getMessage() for r in caplog.records if r.name == "video_llama.tasks.mode_selection"]
    low, high, deaf = runs["low"], runs["high"], runs["deaf"]
    assert sorted(low) == sorted(deaf) == [2.0 + i for i in range(10)]
    assert all(low[t]["sound"] for t in (2.0, 4.0, 6.0)) and not any(low[t]["sound"] for t in (8.0, 10.0, 11.0))
    assert all("sound" not in e for e in deaf.values())  # --no-sound: the frames alone, nothing to say
    assert all(low[t]["probs"] != deaf[t]["probs"] for t in (2.0, 4.0, 6.0))
    assert all(low[t]["probs"] == high[t]["probs"] == deaf[t]["probs"] for t in (8.0, 10.0, 11.0))
    said = runs["low", "said"]
    assert said[0] == "2.0 s: hearing the sound" and said[1].endswith("no sound in this window: deciding from the frames alone")
    assert len(said) == 2  # said when it changes, not per window


def test_evaluation_hears_the_clips_that_have_sound(tiny_llm_dir, sound_clips, tmp_path):
    """action_recognition with datasets.*.sound: each test clip is scored with its sound when it
    has one, from its frames when not, and each prediction says which."""
    from video_llama.jobs.experiment import evaluate

    qa = lambda a: [{"q": "What is the action shown in the displayed video?", "a": a}]  # noqa: E731
    anno = tmp_path / "test.json"
    anno.write_text(json.dumps([{"video": name, "QA": qa(answer)} for name, answer in
                                (("low.mp4", "greet_mode"), ("silent.mp4", "clean_mode"), ("high.mp4", "clean_mode"))]))
    summary = evaluate(["--cfg-path", str(TINY_CONFIG), "--options", f"model.llama_model={tiny_llm_dir}",
                        f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}", *WITH_AUDIO, "model.ckpt=random",
                        f"datasets.webvid_instruct.build_info.anno_dir={{test: {anno}}}",
                        f"datasets.webvid_instruct.build_info.videos_dir={sound_clips}",
                        "datasets.webvid_instruct.sound=True", "run.task=action_recognition", "run.test_splits=[test]",
                        "run.eval_mode=rank", f"run.output_dir={tmp_path / 'out'}"])
    folder = Path(summary["run_dir"]) / "eval_test" / "webvid_instruct_test"
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert {p["video"]: p["sound"] for p in predictions} == {"low.mp4": True, "silent.mp4": False, "high.mp4": True}
    scores = {p["video"]: p["scores"] for p in predictions}
    assert scores["low.mp4"] != scores["high.mp4"]  # the same frames, another sound


def test_infer_hears_a_sound_file_named_as_the_video(tiny_llm_dir, clips_dir, sound_clips, tmp_path, capsys):
    import shutil

    from video_llama.cli.main import main

    (tmp_path / "sounds").mkdir()
    shutil.copy(sound_clips / "bell.wav", tmp_path / "sounds" / "silent.wav")  # silent.mp4's sound, kept apart
    (tmp_path / "videos").mkdir()
    for name in ("silent.mp4", "low.mp4"):
        shutil.copy(sound_clips / name, tmp_path / "videos" / name)
    out = tmp_path / "answers.jsonl"
    options = ["--cfg-path", str(TINY_CONFIG), "--options", *demo_options(tiny_llm_dir, clips_dir), *WITH_AUDIO,
               "--folder", str(tmp_path / "videos"), "--out", str(out), "--max-new-tokens", "2"]
    assert main(["infer", *options, "--audio-dir", str(tmp_path / "sounds")]) == 0
    assert {Path(line["video"]).name: line["sound"] for line in map(json.loads, out.read_text().splitlines())} == {
        "silent.mp4": True, "low.mp4": True}  # the file for one, its own soundtrack for the other
    assert "2 answered" in capsys.readouterr().out
