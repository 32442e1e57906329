"""The Gradio demo in headless Chromium: upload a clip, ask, see an answer; a broken file gives a
message and the app keeps running."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, TINY_CONFIG
from test_demo import demo_options

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def web_demo(tiny_llm_dir, clips_dir, tmp_path):
    pytest.importorskip("gradio", reason="the web demo needs gradio (pip install -e '.[test]')")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (`make test` installs Debian's chromium as root: apt-get install chromium)")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(tmp_path / "demo.log", "w")
    process = subprocess.Popen([sys.executable, "demo.py", "--cfg-path", str(TINY_CONFIG), "--options",
                                *demo_options(tiny_llm_dir, clips_dir), "--web", "--port", str(port),
                                "--examples", str(clips_dir), "--max-new-tokens", "8"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"the web demo did not start:\n{(tmp_path / 'demo.log').read_text()[-3000:]}")
    yield f"http://127.0.0.1:{port}", tmp_path
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_upload_ask_answer_and_a_broken_file_in_the_browser(web_demo, clips_dir):
    from playwright.sync_api import expect, sync_playwright

    url, tmp_path = web_demo
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        status = page.locator("#status")
        expect(status).to_contain_text("Upload a video or an image")
        page.locator("#video input[type=file]").set_input_files(str(clips_dir / "clip0.mp4"))
        page.locator("#upload").click()
        expect(status).to_contain_text("Now talking about clip0.mp4", timeout=60_000)
        question = page.locator("#question textarea")
        question.fill("What is happening in the video?")
        question.press("Enter")
        answer = page.locator("#chatbot .message.bot, #chatbot [data-testid='bot']").last
        expect(answer).not_to_be_empty(timeout=120_000)
        expect(page.locator("#chatbot")).to_contain_text("What is happening in the video?")
        page.screenshot(path=str(tmp_path / "answer.png"))

        page.locator("#restart").click()
        expect(status).to_contain_text("Upload a video or an image")
        page.locator("#video input[type=file]").set_input_files(str(clips_dir / "broken.mp4"))
        page.locator("#upload").click()
        expect(status).to_contain_text("Cannot use broken.mp4", timeout=60_000)
        notice = page.locator(".toast-wrap > *").first  # the browser's own "Video not playable"
        notice.wait_for(timeout=10_000)
        shown, covered = notice.bounding_box(), status.bounding_box()
        assert shown["y"] >= covered["y"] + covered["height"], (shown, covered)  # below the app's message, not over it
        page.screenshot(path=str(tmp_path / "broken.png"))
        page.locator("#video input[type=file]").set_input_files(str(clips_dir / "clip1.mp4"))  # still running
        page.locator("#upload").click()
        expect(status).to_contain_text("Now talking about clip1.mp4", timeout=60_000)
        browser.close()
