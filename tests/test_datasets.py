import json
import logging

import pytest

import video_llama  # noqa: F401
from video_llama.common.registry import registry
from video_llama.datasets.datasets.base_video_dataset import TooManyBadVideos
from video_llama.datasets.datasets.video_instruct_dataset import AnnotationError

from conftest import tiny_config


def build(tiny_llm_dir, anno, videos_dir, *options):
    cfg = tiny_config(tiny_llm_dir, anno, videos_dir, "datasets.webvid_instruct.vis_processor.train.n_frms=4", *options)
    return registry.get_builder_class("webvid_instruct")(cfg.datasets_cfg.webvid_instruct).build_datasets()


def write_anno(tmp_path, entries, name="anno.json"):
    path = tmp_path / name
    path.write_text(json.dumps(entries))
    return path


def entry(video, *qa):
    return {"video": video, "QA": [{"q": q, "a": a} for q, a in qa]}


def test_builder_api_and_sample_fields(tiny_llm_dir, clips_dir, tmp_path):
    anno = {"train": str(clips_dir / "train.json"), "val": str(write_anno(tmp_path, [entry("clip0.mp4", ("q?", "Fall down"))]))}
    datasets = build(tiny_llm_dir, "x", clips_dir, f"datasets.webvid_instruct.build_info.anno_dir={json.dumps(anno)}")
    assert set(datasets) == {"train", "val"} and len(datasets["train"]) == 4
    sample = datasets["train"][0]
    assert sample["image"].shape == (3, 4, 112, 112)
    assert sample["input_ids"].shape == sample["labels"].shape
    val = datasets["val"]
    # instruction clips are sampled uniformly in training too, as the original does
    assert val.vis_processor.sampling == "uniform" and datasets["train"].vis_processor.sampling == "uniform"
    answer = val.tokenizer.decode(val[0]["labels"][val[0]["labels"] != -100])
    assert answer == "Fall down</s>"  # answers are not caption-processed


def test_multi_turn_placeholder_only_in_first_question(tiny_llm_dir, clips_dir, tmp_path):
    anno = write_anno(tmp_path, [entry("clip0.mp4", ("first?", "one"), ("second?", "two"))])
    dataset = build(tiny_llm_dir, anno, clips_dir)["train"]
    ids = dataset.records[0]["input_ids"]
    patch_id = dataset.placeholder_id
    positions = [i for i, t in enumerate(ids) if t == patch_id]
    assert len(positions) == 32 and positions[-1] < ids.index(dataset.tokenizer.eos_token_id)
    labels = dataset.records[0]["labels"]
    assert dataset.tokenizer.decode([t for t in labels if t != -100]) == "one</s> two</s>"


def test_broken_clip_skipped_and_counted(tiny_llm_dir, clips_dir, tmp_path, caplog):
    entries = [entry("broken.mp4", ("q?", "a")), entry("clip1.mp4", ("q?", "b"))]
    dataset = build(tiny_llm_dir, write_anno(tmp_path, entries), clips_dir)["train"]
    with caplog.at_level(logging.WARNING):
        sample = dataset[0]
    assert sample["video"] == "clip1.mp4"
    assert list(dataset.failed) == [str(clips_dir / "broken.mp4")] and "broken.mp4" in caplog.text


def test_too_many_failures_stop_with_the_list(tiny_llm_dir, clips_dir, tmp_path):
    entries = [entry(f"missing{i}.mp4", ("q?", "a")) for i in range(6)] + [entry("clip0.mp4", ("q?", "a"))]
    dataset = build(tiny_llm_dir, write_anno(tmp_path, entries), clips_dir)["train"]
    with pytest.raises(TooManyBadVideos, match=r"(?s)5 of 5 clips.*missing0.mp4.*missing4.mp4"):
        dataset[0]


def test_a_decoder_that_blocks_is_abandoned_at_its_deadline_and_the_clip_skipped_by_name(
        tiny_llm_dir, clips_dir, tmp_path, monkeypatch, caplog):
    """A real decoder blocked in the kernel: a FIFO let through to decord (a stalled network mount
    blocks the same way, in a read no Python code can interrupt)."""
    import os

    from video_llama.processors import video_decoding

    os.mkfifo(tmp_path / "stalled.mp4")
    monkeypatch.setattr(video_decoding, "file_problem", lambda path: None)  # what would refuse a FIFO up front
    entries = [entry(str(tmp_path / "stalled.mp4"), ("q?", "a")), entry("clip1.mp4", ("q?", "b"))]
    dataset = build(tiny_llm_dir, write_anno(tmp_path, entries), clips_dir,
                    "datasets.webvid_instruct.decode_timeout_s=0.5")["train"]
    assert dataset.decode_timeout_s == 0.5
    with caplog.at_level(logging.WARNING):
        sample = dataset[0]
    assert sample["video"] == "clip1.mp4"  # the next clip took its place
    (error,) = dataset.failed.values()
    assert "stalled.mp4 took longer than 0.5 s (decode_timeout_s)" in error and "stalled.mp4" in caplog.text


def test_the_decode_thread_does_its_torch_work_on_one_thread_and_leaves_the_callers_default(monkeypatch):
    """A second thread with an OpenMP team of its own makes libgomp stop spinning in every team (more
    threads than cores): the training step of the caller's thread took twice as long on 2 cores."""
    import threading

    import torch

    from video_llama.processors import video_decoding

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # make test runs with one thread (OMP_NUM_THREADS=1): two to tell apart
    monkeypatch.setattr(video_decoding, "_decoder", None)  # a fresh decode thread
    try:
        seen = video_decoding.with_deadline(lambda _: torch.get_num_threads(), "clip.mp4", 5.0)
        later = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert seen == 1 and torch.get_num_threads() == 2 and later == [2]
    finally:
        if video_decoding._decoder is not None:
            video_decoding._decoder.stop()
        torch.set_num_threads(threads)


def test_the_bad_clip_budget_counts_every_worker_of_the_run(tiny_llm_dir, clips_dir, tmp_path):
    """Two copies of a dataset (as two data-loader workers, or two ranks, hold) sharing the run's
    bad_clips.jsonl: each alone finds too few bad clips to stop, together they find too many."""
    from video_llama.common.run_folder import read_bad_clips

    good = entry("clip0.mp4", ("q?", "a"))
    entries = [e for i in range(6) for e in (entry(f"missing{i}.mp4", ("q?", "a")), good)] + [good] * 28
    ledger = tmp_path / "bad_clips.jsonl"
    workers = [build(tiny_llm_dir, write_anno(tmp_path, entries), clips_dir)["train"] for _ in range(2)]
    for worker in workers:
        worker.log_failures_to(ledger)
    assert workers[0].budget.run_limit() == 5  # 10% of 40 clips, but never fewer than min_failures
    for index in (0, 2, 4):  # three bad clips, each replaced by the good one after it
        assert workers[0][index]["video"] == "clip0.mp4"
    workers[1][6], workers[1][8]  # noqa: B018
    assert len(workers[1].failed) == 2 and len(read_bad_clips(ledger)) == 5
    with pytest.raises(TooManyBadVideos, match=r"6 distinct clips of its 40 could not be decoded in this run"):
        workers[1][10]
    assert {e["clip"].rsplit("/", 1)[-1] for e in read_bad_clips(ledger)} == {f"missing{i}.mp4" for i in range(6)}


def test_short_clip_is_repeated_and_counted(tiny_llm_dir, clips_dir, tmp_path):
    dataset = build(tiny_llm_dir, write_anno(tmp_path, [entry("short.avi", ("q?", "a"))]), clips_dir)["train"]
    assert dataset[0]["image"].shape[1] == 4 and dataset.short == {"short.avi"}


def test_too_long_text_is_reported_and_left_out(tiny_llm_dir, clips_dir, tmp_path, caplog):
    entries = [entry("clip0.mp4", ("q?", "a")), entry("clip1.mp4", ("a very long question " * 40, "b"))]
    with caplog.at_level(logging.WARNING):
        dataset = build(tiny_llm_dir, write_anno(tmp_path, entries), clips_dir,
                        "datasets.webvid_instruct.max_seq_len=160")["train"]
    assert len(dataset) == 1 and [r["video"] for r in dataset.dropped] == ["clip1.mp4"]
    assert "left out 1 record" in caplog.text


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ('{"video": "a.mp4"}', "must hold a JSON list"),
    ('[{"video": "a.mp4", "QA": [{"q": "x"}]}]', "entry 0: expected"),
])
def test_bad_annotation_files_name_the_file(tiny_llm_dir, clips_dir, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message) as err:
        build(tiny_llm_dir, path, clips_dir)
    assert "bad.json" in str(err.value)


def test_missing_paths_name_the_key(tiny_llm_dir, clips_dir, tmp_path):
    with pytest.raises(AnnotationError, match="not found: .*nope.json"):
        build(tiny_llm_dir, tmp_path / "nope.json", clips_dir)
    with pytest.raises(FileNotFoundError, match="build_info.videos_dir"):
        build(tiny_llm_dir, clips_dir / "train.json", tmp_path / "no_videos")


def test_caption_builder_tokenizes_caption_as_answer_to_a_prompt(tiny_llm_dir, clips_dir, tmp_path):
    """Captions are cleaned, become the answer to a random prompt of prompt_path (placeholders in
    the prompt), and max_txt_len cuts the caption only; the prompt is drawn from the global
    random, so a seed fixes it."""
    import random
    import shutil

    from video_llama.common.config import Config

    (tmp_path / "pages").mkdir()
    shutil.copy(clips_dir / "clip0.mp4", tmp_path / "pages" / "v0.mp4")
    (tmp_path / "captions.csv").write_text("videoid,name,page_dir\nv0,A Dog (running) FAST.,pages\n")
    (tmp_path / "cfg.yaml").write_text(
        f"model: {{model_type: tiny, llama_model: {tiny_llm_dir}, img_size: 112, prompt_path: prompts/alignment_video.txt}}\n"
        f"datasets: {{webvid: {{build_info: {{anno_dir: {tmp_path / 'captions.csv'}, videos_dir: {tmp_path}}},"
        " vis_processor: {train: {n_frms: 4}}}}\n"
        "run: {device: cpu}\n")
    cfg = Config.from_file(tmp_path / "cfg.yaml", ["model.max_txt_len=3"])
    dataset = registry.get_builder_class("webvid")(cfg.datasets_cfg.webvid).build_datasets()["train"]
    random.seed(0)
    sample = dataset[0]
    random.seed(0)
    assert dataset[0]["input_ids"].tolist() == sample["input_ids"].tolist()
    assert sample["text_input"] == "a dog running fast" and sample["image"].shape == (3, 4, 112, 112)
    tokenizer = dataset.tokenizer
    assert (sample["input_ids"] == dataset.tokenizer.convert_tokens_to_ids("<ImageHere>")).sum() == 32
    answer = sample["labels"][sample["labels"] != -100]
    assert len(answer) == 3 and tokenizer.decode(answer).strip() in "a dog running fast"
    assert tokenizer.decode(sample["input_ids"]).replace(" ", "").startswith("<s>[INST]<<SYS>>")


def test_anno_dir_may_be_a_prepare_folder(tiny_llm_dir, clips_dir, tmp_path):
    import shutil

    folder = tmp_path / "anno"
    folder.mkdir()
    shutil.copy(clips_dir / "train.json", folder / "train.json")
    shutil.copy(clips_dir / "train.json", folder / "val.json")
    datasets = build(tiny_llm_dir, folder, clips_dir)
    assert sorted(datasets) == ["train", "val"] and len(datasets["val"]) == 4


def test_failure_budget_tolerates_a_few_bad_clips_and_stops_a_mostly_bad_dataset():
    """5% unreadable clips (normal for WebVid) never stop any of 64 workers over 2,000 tries each;
    half unreadable stops within 40 tries."""
    import random

    from video_llama.datasets.datasets.base_video_dataset import FailureBudget

    def first_stop(bad_share, tries, seed):
        rng, budget = random.Random(seed), FailureBudget(max_ratio=0.1)
        for n in range(tries):
            budget.tried += 1
            if rng.random() < bad_share:
                budget.failed[f"clip{n}"] = "cannot decode"
                if budget.exceeded():
                    return n + 1
        return None

    assert all(first_stop(0.05, 2000, seed) is None for seed in range(64))
    stops = [first_stop(0.5, 1000, seed) for seed in range(20)]
    assert all(stop is not None and stop <= 40 for stop in stops), stops


def test_timestamp_sentence_between_video_and_question_as_the_original(tiny_llm_dir, clips_dir, tmp_path):
    """clip0 has 24 frames at 8 fps: 8 uniform frames 0, 3, ..., 21 are at these seconds (the
    original: round(index / fps, 1)). The expected text is written down here from the original's
    rules, not built by our template code."""
    anno = write_anno(tmp_path, [entry("clip0.mp4", ("What is the action?", "greet_mode"))])
    dataset = build(tiny_llm_dir, anno, clips_dir, "datasets.webvid_instruct.vis_processor.train.n_frms=8")["train"]
    sample = dataset[0]
    sentence = "The video contains 8 frames sampled at 0.0, 0.4, 0.8, 1.1, 1.5, 1.9, 2.2, 2.6 seconds. "
    # the spaces after <s> and <ImageHere>: the prefix the original's tokenizer put on the text after a
    # special token; none before </s>, which the tiny tokenizer's folder declares as a plain string
    expected = ("<s> [INST] <<SYS>>\n \n<</SYS>>\n\n<Video>" + "<ImageHere>" * 32 + " </Video> " + sentence
                + "What is the action? [/INST] greet_mode</s>")
    tokenizer = dataset.tokenizer
    assert tokenizer.decode(sample["input_ids"]) == expected
    assert tokenizer.decode(sample["labels"][sample["labels"] != -100]) == "greet_mode</s>"
    assert sample["question"] == sentence + "What is the action?"  # evaluation asks it the same way
    off = build(tiny_llm_dir, anno, clips_dir, "datasets.webvid_instruct.timestamps=False")["train"][0]
    assert "frames sampled" not in tokenizer.decode(off["input_ids"])
    chinese = build(tiny_llm_dir, anno, clips_dir, "datasets.webvid_instruct.data_type=video_cn")["train"][0]
    assert "frames sampled" not in tokenizer.decode(chinese["input_ids"])


def test_a_rest_answer_that_is_no_class_names_the_key_and_the_likely_one(tiny_llm_dir, clips_dir, tmp_path):
    entries = [entry("clip0.mp4", ("q?", "Still")), entry("clip1.mp4", ("q?", "Swipe horizontal"))]
    with pytest.raises(AnnotationError, match=r"set datasets.webvid_instruct.rest_answer .* \('Still' reads like one: "
                                              r"--options datasets.webvid_instruct.rest_answer='Still'\)"):
        build(tiny_llm_dir, write_anno(tmp_path, entries), clips_dir, "datasets.webvid_instruct.vis_processor.train.window_s=2.0",
              "datasets.webvid_instruct.stop_ratio=0.1", "datasets.webvid_instruct.rest_answer=Rest")
