"""Chat and demo.py with the tiny model: asked as trained, history, truncation, terminal and --question."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, TINY_CONFIG

SHORT = {"max_new_tokens": 6}


def demo_options(llm, clips):
    return [f"model.llama_model={llm}", f"datasets.webvid_instruct.tokenizer_name={llm}", "model.ckpt=random",
            f"datasets.webvid_instruct.build_info.anno_dir={clips / 'train.json'}",
            f"datasets.webvid_instruct.build_info.videos_dir={clips}"]


@pytest.fixture(scope="module")
def setup(tiny_llm_dir, clips_dir):
    from video_llama.jobs.chat import load_setup

    return load_setup(TINY_CONFIG, demo_options(tiny_llm_dir, clips_dir))


def test_a_chat_asks_as_trained_and_keeps_its_history(setup, clips_dir):
    from video_llama.conversation import timestamp_sentence

    chat = setup.new_chat()
    chat.upload_video(clips_dir / "clip0.mp4")
    info = setup.vis_processor.clip_info(clips_dir / "clip0.mp4")
    assert chat.visual.note == timestamp_sentence(info.indices, info.fps) != ""  # 8 frames of a 24-frame clip at 8 fps
    first = chat.ask("What is happening?", **SHORT)
    second = chat.ask("And then?", **SHORT)
    assert chat.history == [("What is happening?", first), ("And then?", second)]
    history, question = chat._turns("Why?", 6)  # what the third question sends
    assert history == [(chat.visual.note + "What is happening?", first), ("And then?", second)] and question == "Why?"
    again = setup.new_chat()  # greedy: the same answers; streaming ends with the same text
    again.upload_video(clips_dir / "clip0.mp4")
    assert again.ask("What is happening?", **SHORT) == first
    streamed = list(again.stream("And then?", **SHORT, do_sample=False))
    assert streamed[-1] == second and again.history[-1] == ("And then?", second)


def test_a_long_conversation_drops_old_turns_never_the_video(setup, clips_dir):
    from video_llama.conversation.chat import ChatError

    chat = setup.new_chat()
    chat.upload_video(clips_dir / "clip1.mp4")
    chat.max_context = len(setup.model.prompt_ids(chat.visual.note + "question number 0 about the clip")) + 60
    for turn in range(4):
        chat.ask(f"question number {turn} about the clip", **SHORT)
    history, question = chat._turns("the last question", 6)
    assert 0 < len(history) < 4 and history[0][0].startswith(chat.visual.note)  # oldest dropped, times kept
    ids = setup.model.prompt_ids(question, history)
    assert len(ids) + 6 <= chat.max_context and ids.count(setup.model.im_patch_token_id) == setup.model.num_video_query_token
    with pytest.raises(ChatError, match="max_context"):
        chat.ask("word " * 200, **SHORT)
    with pytest.raises(ChatError, match="upload a video"):
        setup.new_chat().ask("hello?")


def test_an_image_is_a_one_frame_video_with_image_tags(setup, tmp_path):
    from PIL import Image

    from video_llama.processors.video_decoding import VideoDecodeError

    path = tmp_path / "still.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
    chat = setup.new_chat()
    chat.upload_image(path)
    assert chat.visual.frames.shape == (3, 112, 112) and chat.visual.note == ""
    tokenizer = setup.model.llama_tokenizer
    assert "<Image>" in tokenizer.decode(setup.model.prompt_ids("What is this?", image=True))
    answer = chat.ask("What is this?", **SHORT)
    assert isinstance(answer, str) and chat.history == [("What is this?", answer)]
    (tmp_path / "not_an_image.png").write_bytes(b"plain text")
    with pytest.raises(VideoDecodeError, match="not_an_image.png"):
        chat.upload_image(tmp_path / "not_an_image.png")


def run_demo(llm, clips, *args, stdin=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "demo.py", "--cfg-path", str(TINY_CONFIG), "--options", *demo_options(llm, clips),
           "--max-new-tokens", "6", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_terminal_chat_answers_keeps_going_after_a_bad_file(tiny_llm_dir, clips_dir):
    lines = f"What is happening?\n/video {clips_dir / 'broken.mp4'}\nAnd then?\n/reset\nStill there?\n/quit\n"
    result = run_demo(tiny_llm_dir, clips_dir, "--video", str(clips_dir / "clip0.mp4"), stdin=lines)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout.splitlines()
    assert out[0].startswith("commands:")
    answers = [line for line in out if line.startswith("answer: ")]
    assert len(answers) == 2  # the first question and the one after the bad file (still about clip0)
    errors = [line for line in out if line.startswith("error: ")]
    assert len(errors) == 2 and "broken.mp4" in errors[0] and "upload a video or an image first" in errors[1]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_one_question_prints_one_reproducible_answer_and_a_bad_file_one_line(tiny_llm_dir, clips_dir):
    ask = ("--video", str(clips_dir / "clip2.mp4"), "--question", "What is happening?")
    first, second = run_demo(tiny_llm_dir, clips_dir, *ask), run_demo(tiny_llm_dir, clips_dir, *ask)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(first.stdout.strip().splitlines()) == 1 and first.stdout == second.stdout
    broken = run_demo(tiny_llm_dir, clips_dir, "--video", str(clips_dir / "broken.mp4"), "--question", "What?")
    assert broken.returncode == 2 and broken.stdout == ""
    (line,) = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert "broken.mp4" in line and "Traceback" not in broken.stderr


def test_batch_inference_writes_a_line_per_video_reports_a_broken_one_and_resumes(setup, clips_dir, tmp_path):
    import json

    from video_llama.jobs.infer import infer

    jobs = [(str(clips_dir / name), "What is happening?", None) for name in ("clip0.mp4", "broken.mp4", "clip1.mp4")]
    out = tmp_path / "answers.jsonl"
    assert infer(setup, jobs[:2], out, batch_size=2, max_new_tokens=4, progress=False) == (1, 1, 0)
    with open(out, "a") as f:
        f.write('{"video": "torn')  # a run killed while writing a line
    assert infer(setup, jobs, out, batch_size=2, max_new_tokens=4, progress=False) == (1, 0, 2)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["video"] for line in lines] == [jobs[0][0], jobs[1][0], jobs[2][0]]
    assert "broken.mp4" in lines[1]["error"] and "answer" not in lines[1]
    assert all(isinstance(lines[i]["answer"], str) and lines[i]["seconds"] >= 0 for i in (0, 2))
    chat = setup.new_chat()  # the same question as the chat asks it: the same greedy answer
    chat.upload_video(jobs[2][0])
    assert chat.ask("What is happening?", max_new_tokens=4) == lines[2]["answer"]


@pytest.mark.slow
def test_the_infer_command_over_an_annotation_file(tiny_llm_dir, clips_dir, tmp_path):
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "video_llama.cli.main", "infer", "--cfg-path", str(TINY_CONFIG), "--options",
           *demo_options(tiny_llm_dir, clips_dir), "--anno", str(clips_dir / "train.json"), "--videos-dir", str(clips_dir),
           "--out", str(tmp_path / "out.jsonl"), "--max-new-tokens", "3", "--batch-size", "3"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 answered, 0 could not be decoded" in result.stdout
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {line["reference"] for line in lines} == {"greet_mode", "clean_mode"}
    again = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "0 answered, 0 could not be decoded (lines with \"error\"), 4 already in" in again.stdout


def short_clip_warning(path):
    return (f"{path} has 3 frames, fewer than the 8 the model samples: frames repeat, the answer may be unreliable "
            f"(a clip of 8 frames or more avoids it)")


def test_a_clip_shorter_than_the_frames_sampled_is_answered_with_a_warning(setup, clips_dir, tmp_path, caplog):
    """short.avi has 3 frames and the processor samples 8: the chat, the terminal and infer say so;
    an ordinary clip gets no warning."""
    import io
    import json
    import logging

    from video_llama.cli.demo import terminal_chat
    from video_llama.jobs.infer import infer

    short, ordinary = clips_dir / "short.avi", clips_dir / "clip0.mp4"
    chat = setup.new_chat()
    chat.upload_video(short)
    assert chat.visual.warning == short_clip_warning(short)
    out = io.StringIO()
    terminal_chat(setup.new_chat(), SHORT, io.StringIO(f"/video {short}\n/video {ordinary}\n/quit\n"), out)
    assert [line for line in out.getvalue().splitlines() if line.startswith("warning: ")] == [
        f"warning: {short_clip_warning(short)}"]

    jobs = [(str(short), "What is happening?", None), (str(ordinary), "What is happening?", None)]
    with caplog.at_level(logging.WARNING, logger="video_llama.jobs.infer"):
        assert infer(setup, jobs, tmp_path / "answers.jsonl", batch_size=2, max_new_tokens=2, progress=False) == (2, 0, 0)
    lines = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert lines[0]["warning"] == short_clip_warning(short) and "answer" in lines[0] and "warning" not in lines[1]
    assert [r.getMessage() for r in caplog.records] == [short_clip_warning(short)]


@pytest.mark.slow
def test_the_web_demo_status_warns_of_a_short_clip(setup, clips_dir):
    pytest.importorskip("gradio", reason="the web demo needs gradio (pip install -e '.[test]')")
    from video_llama.jobs.web_demo import build_app

    app = build_app(setup)
    upload = next(f.fn for f in app.fns.values() if f.name == "upload")
    _, _, status, _, _ = upload(str(clips_dir / "short.avi"), None, None)
    assert status == f"Now talking about **short.avi**. Ask a question.\n\n**Warning**: {short_clip_warning('short.avi')}"
    _, _, status, _, _ = upload(str(clips_dir / "clip0.mp4"), None, None)
    assert status == "Now talking about **clip0.mp4**. Ask a question."


def test_one_question_about_a_short_clip_warns_on_stderr_and_answers_on_stdout(tiny_llm_dir, clips_dir, capsys):
    from video_llama.cli.demo import main

    short = clips_dir / "short.avi"
    assert main(["--cfg-path", str(TINY_CONFIG), "--options", *demo_options(tiny_llm_dir, clips_dir), "--video", str(short),
                 "--question", "What is happening?", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr()
    assert len(out.out.strip().splitlines()) == 1  # the answer alone
    assert f"warning: {short_clip_warning(short)}\n" in out.err


def test_the_original_demos_prompt_style_asks_in_its_format(tiny_llm_dir, clips_dir, capsys, monkeypatch):
    """--prompt-style original_demo: the original demo's system prompt and a second space before the
    first question (tests/test_original_ids.py checks its ids against the original's)."""
    from video_llama.cli.demo import main
    from video_llama.models.video_llama import VideoLLAMA

    asked = []
    real = VideoLLAMA.generate
    monkeypatch.setattr(VideoLLAMA, "generate", lambda self, *a, **kw: asked.append((self, a, kw)) or real(self, *a, **kw))
    options = ["--cfg-path", str(TINY_CONFIG), "--options", *demo_options(tiny_llm_dir, clips_dir),
               "--video", str(clips_dir / "clip0.mp4"), "--question", "What is happening?", "--max-new-tokens", "2"]
    assert main([*options, "--prompt-style", "original_demo"]) == 0 and main(options) == 0
    (model, args, demo), (_, _, trained) = asked
    text = model.llama_tokenizer.decode(model.prompt_ids(args[1][0], demo["histories"][0], template=demo["template"]))
    assert "You are a helpful language and vision assistant." in text and "seconds.  What is happening?" in text
    assert trained["template"] is None and len(capsys.readouterr().out.strip().splitlines()) == 2
