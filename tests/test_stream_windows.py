"""Training for streams: a processor's window is the selector's window, straddling windows show the
cut between two clips with the answer the label rule gives, and evaluation windows are fixed."""

import random

import numpy as np
import pytest
import torch

from video_llama.datasets.datasets.straddle import Straddle, cut_window
from video_llama.processors.video_decoding import WindowSampling
from video_llama.processors.video_processors import (
    AlproVideoEvalProcessor,
    AlproVideoTrainProcessor,
    VideoProcessorConfig,
    VideoTrainProcessorConfig,
)
from video_llama.tasks.mode_selection import ModeSelector, SelectorSettings

from conftest import gradient_clip, tiny_config

FPS = 8


def brightness_index(frames, num_frames):
    """The source frame index each decoded frame shows (gradient_clip's red channel encodes it)."""
    level = frames[0].float().mean(dim=(-2, -1)).numpy()  # red channel, per frame
    return np.rint(level / 255 * (num_frames - 1)).astype(int).tolist()


@pytest.fixture(scope="module")
def gradient_video(tmp_path_factory):
    from video_llama.data_tools.video_writer import write_video

    return write_video(tmp_path_factory.mktemp("window") / "clip.mp4", gradient_clip(40, 32, 32), fps=FPS)


class Uniform:
    """A stand-in model with no opinion."""

    device = torch.device("cpu")

    def score(self, frames, questions, labels, length_normalize=False):
        return torch.zeros(1, len(labels))


class Raw:
    def apply(self, clip):
        return clip


def test_a_processor_window_is_the_window_the_selector_takes(gradient_video):
    """Fed the same clip as a stream, the selector's window ending at frame e is the processor's."""
    frames = gradient_clip(40, 32, 32)
    for end in (16, 27, 39):
        selector = ModeSelector(Uniform(), ["a", "b"], "q", Raw(), n_frms=8,
                                settings=SelectorSettings(window_s=2.0, stride_s=100.0))
        for i in range(end + 1):
            selector.push(i / FPS, frames[i])
        times, window = selector.window(end / FPS)
        chosen = brightness_index(window.float(), 40)
        assert chosen == np.rint(times * FPS).astype(int).tolist()

        class EndsAt:  # a draw of the window's end that lands on the selector's frame
            def randint(self, low, high):
                assert low <= end <= high
                return end

        proc = AlproVideoTrainProcessor(VideoTrainProcessorConfig(n_frms=8, image_size=32, window_s=2.0))
        clip = proc.load(gradient_video, rng=EndsAt())
        assert clip.indices == list(range(end - 16, end - 1, 2))  # 2 s at 8 fps: 17 frames, every other one
        assert brightness_index(clip.frames, 40) == chosen == clip.indices


def test_window_placement_random_in_training_middle_in_eval(gradient_video):
    eval_proc = AlproVideoEvalProcessor(VideoProcessorConfig(n_frms=8, image_size=32, window_s=2.0))
    assert eval_proc.load(gradient_video).indices == [11, 13, 15, 17, 19, 21, 23, 25]  # centred, 2 s = 16 frames
    train_proc = AlproVideoTrainProcessor(VideoTrainProcessorConfig(n_frms=8, image_size=32, window_s=2.0))
    starts = {train_proc.load(gradient_video, rng=random.Random(seed)).indices[0] for seed in range(20)}
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 39 - 16  # whole windows inside the clip
    short = WindowSampling(2.0, 8)(10, FPS, random.Random(0))  # a clip shorter than the window: taken whole
    assert short[0] == 0 and short[-1] >= 8
    with pytest.raises(ValueError, match="window_s"):
        VideoProcessorConfig(window_s=-1)


def test_a_straddling_cut_shows_both_clips_and_the_label_rule():
    for seed in range(50):
        cut = cut_window(2.0, 8, 40, FPS, 30, FPS, random.Random(seed))
        assert cut.first and cut.second and len(cut.first) + len(cut.second) == 8
        assert cut.first == sorted(cut.first) and cut.first[-1] >= 40 - 16  # the end of the earlier clip
        assert cut.second[0] <= 2 and cut.second == sorted(cut.second)  # the start of the later one
        assert 0 < cut.second_share < 1
    recent, majority = Straddle(1.0, 0.5), Straddle(1.0, 1.0)
    assert recent.second_wins(0.3) and not majority.second_wins(0.3)  # the new action in the last half
    assert not recent.second_wins(0.2) and majority.second_wins(0.6)
    assert cut_window(2.0, 1, 40, FPS, 30, FPS, random.Random(0)) is None  # one frame cannot straddle
    with pytest.raises(ValueError, match="straddle_ratio"):
        Straddle(ratio=1.5)


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """Clips of two answers told apart by colour: dark (greet_mode) and bright (clean_mode)."""
    import json

    from video_llama.data_tools.video_writer import write_video

    root = tmp_path_factory.mktemp("straddle")
    entries = []
    for i in range(4):
        answer, level = ("greet_mode", 30) if i % 2 == 0 else ("clean_mode", 220)
        write_video(root / f"c{i}.mp4", np.full((32, 32, 32, 3), level, np.uint8), fps=FPS)
        entries.append({"video": f"c{i}.mp4", "QA": [{"q": "What is the action?", "a": answer}]})
    (root / "train.json").write_text(json.dumps(entries))
    (root / "val.json").write_text(json.dumps(entries))
    return root


def build_stream_datasets(tiny_llm_dir, root, *options):
    from video_llama.common.registry import registry

    anno = f"{{train: {root / 'train.json'}, val: {root / 'val.json'}}}"
    cfg = tiny_config(tiny_llm_dir, anno, root, "datasets.webvid_instruct.vis_processor.train.window_s=2.0",
                      "datasets.webvid_instruct.vis_processor.eval.window_s=2.0",
                      "datasets.webvid_instruct.vis_processor.train.min_scale=1.0",
                      "datasets.webvid_instruct.timestamps=False", *options)
    return registry.get_builder_class("webvid_instruct")(cfg.datasets_cfg.webvid_instruct).build_datasets()


def test_straddling_samples_carry_the_answer_of_the_recent_clip(tiny_llm_dir, two_classes):
    from video_llama.common.utils import seeded

    datasets = build_stream_datasets(tiny_llm_dir, two_classes, "datasets.webvid_instruct.straddle_ratio=1.0")
    train = datasets["train"]
    for seed in range(12):
        with seeded(seed):
            sample = train[seed % 4]
        share = float(sample["video"].split("(")[1].split()[0])
        first, second = [part.strip().split()[0] for part in sample["video"].split("(")[0].split("->")]
        assert first != second
        answer = sample["answer"]
        dark_first = first in ("c0.mp4", "c2.mp4")
        expected_second = "clean_mode" if dark_first else "greet_mode"
        expected = expected_second if share > 0.25 else ("greet_mode" if dark_first else "clean_mode")
        assert answer == expected
        # the frames show the earlier clip, then the later one (per-clip normalised: compare order only)
        levels = sample["image"].mean(dim=(0, 2, 3))
        assert (levels[0] < levels[-1]) == dark_first
    # the labels are the answers' own tokens: the same sample tokenised as a plain record of that answer
    plain = [r for r in train.records if r["QA"][0]["a"] == sample["answer"]][0]
    assert sample["input_ids"].tolist() == plain["input_ids"]


def test_same_answer_straddles_join_two_clips_of_one_answer(tiny_llm_dir, two_classes):
    from video_llama.common.utils import seeded

    datasets = build_stream_datasets(tiny_llm_dir, two_classes, "datasets.webvid_instruct.straddle_ratio=1.0",
                                     "datasets.webvid_instruct.straddle_same_answer=0.5")
    pairs = []
    for seed in range(40):
        with seeded(seed):
            sample = datasets["train"][seed % 4]
        first, second = [part.strip().split()[0] for part in sample["video"].split("(")[0].split("->")]
        assert first != second  # never a clip joined to itself
        same = (first in ("c0.mp4", "c2.mp4")) == (second in ("c0.mp4", "c2.mp4"))
        if same:  # one answer on both sides of the cut: that answer, wherever the cut is
            assert sample["answer"] == ("greet_mode" if first in ("c0.mp4", "c2.mp4") else "clean_mode")
        pairs.append(same)
    assert 8 <= sum(pairs) <= 32  # about half of 40
    with pytest.raises(ValueError, match="straddle_same_answer"):
        Straddle(ratio=0.5, same_answer=2)


def test_evaluation_windows_are_the_same_every_time_and_training_ones_vary(tiny_llm_dir, two_classes):
    from video_llama.common.utils import seeded

    datasets = build_stream_datasets(tiny_llm_dir, two_classes, "datasets.webvid_instruct.straddle_ratio=0.5")
    val = datasets["val"]
    names = [val[i]["video"] for i in range(4)]
    assert names == [val[i]["video"] for i in range(4)]
    straddles = [random.Random(i).random() < 0.5 for i in range(4)]  # the index decides, as in the dataset
    assert ["->" in name for name in names] == straddles and any(straddles)
    with seeded(1):
        a = datasets["train"][0]["video"]
    draws = set()
    for seed in range(10):
        with seeded(seed):
            draws.add(datasets["train"][0]["video"])
    assert len(draws) > 1 and a in draws


def test_straddling_needs_windows(tiny_llm_dir, two_classes):
    from video_llama.common.registry import registry
    from video_llama.common.errors import UserError

    cfg = tiny_config(tiny_llm_dir, two_classes / "train.json", two_classes, "datasets.webvid_instruct.straddle_ratio=0.3")
    with pytest.raises(UserError, match="window_s"):
        registry.get_builder_class("webvid_instruct")(cfg.datasets_cfg.webvid_instruct).build_datasets()


def test_a_window_names_its_frame_times_from_its_start(tiny_llm_dir, two_classes):
    """With the timestamp sentence, a window's frames are timed from the window's start, as
    select-mode times a stream's window, wherever in the clip the window was cut."""
    from video_llama.common.utils import seeded

    datasets = build_stream_datasets(tiny_llm_dir, two_classes, "datasets.webvid_instruct.timestamps=True")
    for seed in range(3):
        with seeded(seed):
            sample = datasets["train"][0]
        assert sample["question"].startswith("The video contains 8 frames sampled at 0.0, 0.2, 0.5,")


def test_a_straddle_with_an_unreadable_clip_is_counted_and_named(tiny_llm_dir, two_classes, tmp_path):
    import shutil

    root = tmp_path / "clips"
    shutil.copytree(two_classes, root)
    for name in ("c1.mp4", "c3.mp4"):  # every clean_mode clip
        (root / name).write_bytes(b"not a video")
    datasets = build_stream_datasets(tiny_llm_dir, root, "datasets.webvid_instruct.straddle_ratio=1.0",
                                     "datasets.webvid_instruct.max_failed_ratio=1.0")
    val = datasets["val"]
    sample = val[0]  # greet_mode c0 paired with a clean_mode clip: both of those are broken
    assert sample["unreadable"] in ("c1.mp4", "c3.mp4") and sample["unreadable"] in sample["error"]
    assert val.budget.tried == 1 and len(val.failed) == 1


@pytest.fixture(scope="module")
def motion_and_rest(tmp_path_factory):
    """Clips of a motion (every frame another brightness) and of a hand at rest (one flat frame)."""
    import json

    from video_llama.data_tools.video_writer import write_video

    root = tmp_path_factory.mktemp("stop")
    entries = []
    for i in range(4):
        answer, frames = ("greet_mode", gradient_clip(40, 32, 32, seed=i)) if i < 2 else ("rest", np.full((40, 32, 32, 3), 90, np.uint8))
        write_video(root / f"c{i}.mp4", frames, fps=FPS)
        entries.append({"video": f"c{i}.mp4", "QA": [{"q": "What is the action?", "a": answer}]})
    for split in ("train", "val"):
        (root / f"{split}.json").write_text(json.dumps(entries))
    return root


def test_a_motion_that_stops_or_starts_holds_its_frame_and_is_answered_by_the_rule(tiny_llm_dir, motion_and_rest):
    from video_llama.common.utils import seeded
    from video_llama.datasets.datasets.straddle import still_indices

    cut = cut_window(2.0, 8, 40, FPS, 40, FPS, random.Random(3))
    stop, start = still_indices(cut, 40, stops=True), still_indices(cut, 40, stops=False)
    assert stop[:len(cut.first)] == cut.first and set(stop[len(cut.first):]) == {39}
    assert set(start[:len(cut.first)]) == {0} and start[len(cut.first):] == cut.second

    datasets = build_stream_datasets(tiny_llm_dir, motion_and_rest, "datasets.webvid_instruct.stop_ratio=1.0",
                                     "datasets.webvid_instruct.rest_answer=rest")
    train, seen, every_kind = datasets["train"], set(), {(True, True), (True, False), (False, True), (False, False), True}
    for seed in range(200):
        with seeded(seed):
            sample = train[seed % 2]  # the motion clips: every one of their samples stops or starts
        name, share = sample["video"].split(" (")
        share, stops = float(share.split()[0]), name.endswith("stops")
        if share == 0.25:
            continue  # printed to 2 places: the rule's boundary, either side of it
        assert name.split()[1] in ("stops", "starts")
        seen.add((stops, share > 0.25))
        still_at_end = stops == (share > 0.25)  # the stillness holds most of the window's last half
        assert sample["answer"] == ("rest" if still_at_end else "greet_mode")
        frames = sample["image"]  # (C, T, H, W): the still frames are one frame, the moving ones differ
        moved = [not torch.equal(frames[:, t], frames[:, t + 1]) for t in range(frames.shape[1] - 1)]
        assert moved == sorted(moved, reverse=stops)  # moving, then still (or the reverse)
        seen.add(any(moved) and not all(moved))  # the cut at a window's edge: all one or the other
        if seen >= every_kind:
            break
    assert seen >= every_kind  # stops and starts, either answer
    with seeded(0):
        assert "stops" not in train[2]["video"] and "starts" not in train[2]["video"]  # rest itself stays whole


def test_a_stop_ratio_needs_the_rest_answer_among_the_answers(tiny_llm_dir, motion_and_rest):
    from video_llama.common.errors import UserError

    with pytest.raises(UserError, match="rest_answer"):
        build_stream_datasets(tiny_llm_dir, motion_and_rest, "datasets.webvid_instruct.stop_ratio=0.2")
    with pytest.raises(UserError, match="rest_answer='idle'.*one of \\['greet_mode', 'rest'\\]"):
        build_stream_datasets(tiny_llm_dir, motion_and_rest, "datasets.webvid_instruct.stop_ratio=0.2",
                              "datasets.webvid_instruct.rest_answer=idle")
