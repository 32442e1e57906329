"""prepare / synth, answer matching, ranking, metrics and their files."""

import json

import pytest
import torch

import video_llama  # noqa: F401
from video_llama.data_tools.action_folders import prepare, readable_label, stratified_split
from video_llama.data_tools.video_writer import write_video
from video_llama.conversation.answers import match_answer, normalize_answer
from video_llama.tasks.action_recognition import compute_metrics, write_results

from conftest import gradient_clip


@pytest.fixture(scope="module")
def action_root(tmp_path_factory, clips_dir):
    """wave/ (flat, 4 clips), fall_down/ (nested, 4 clips), a broken file and a too-short clip."""
    root = tmp_path_factory.mktemp("actions")
    for i in range(4):
        write_video(root / "wave" / f"w{i}.mp4", gradient_clip(12, 32, 32, seed=i))
        write_video(root / "fall_down" / "session1" / f"f{i}.avi", gradient_clip(12, 32, 32, seed=10 + i))
    (root / "wave" / "broken.mkv").write_bytes(b"not a video at all")
    write_video(root / "fall_down" / "short.mp4", gradient_clip(3, 32, 32))
    return root


def test_prepare_layouts_unreadable_short_and_label_map(action_root, tmp_path):
    label_map = tmp_path / "modes.yaml"
    label_map.write_text("wave: greet_mode\nfall_down: alert_mode\n")
    report, labels = prepare(action_root, tmp_path / "out", label_map=label_map, ratios=(0.5, 0.25, 0.25), n_frms=8)
    assert labels == {"wave": "greet_mode", "fall_down": "alert_mode"}
    assert [rel for rel, _ in report.unreadable] == ["wave/broken.mkv"]
    assert report.short == [("fall_down/short.mp4", 3)]
    entries = {s: json.loads((tmp_path / "out" / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    videos = [e["video"] for split in entries.values() for e in split]
    assert sorted(videos) == sorted([f"wave/w{i}.mp4" for i in range(4)] + [f"fall_down/session1/f{i}.avi" for i in range(4)])
    assert {e["QA"][0]["a"] for e in entries["train"]} == {"greet_mode", "alert_mode"}
    assert json.loads((tmp_path / "out" / "labels.json").read_text())["labels"] == ["alert_mode", "greet_mode"]
    table = report.table(labels)
    assert "greet_mode" in table and "total" in table


def test_prepare_keep_short_and_loop_short(action_root, tmp_path):
    report, _ = prepare(action_root, tmp_path / "keep", n_frms=8, keep_short=True)
    assert report.counts["fall_down"]["short_kept"] == 1 and not report.short
    report, _ = prepare(action_root, tmp_path / "loop", n_frms=8, loop_short=True)
    assert report.counts["fall_down"]["looped"] == 1
    from video_llama.data_tools.action_folders import probe

    assert probe(action_root / "_looped" / "fall_down" / "short.mp4")[0] >= 8


def test_prepare_errors_name_the_fix(action_root, tmp_path):
    partial = tmp_path / "partial.json"
    partial.write_text('{"wave": "greet_mode"}')
    with pytest.raises(ValueError, match=r"no entry for folder\(s\) \['fall_down'\]"):
        prepare(action_root, tmp_path / "x", label_map=partial)
    with pytest.raises(FileNotFoundError, match="no videos"):
        prepare(tmp_path, tmp_path / "y")


def test_split_is_stratified_and_seeded():
    items = {"a": [f"a{i}" for i in range(10)], "b": [f"b{i}" for i in range(20)]}
    split = stratified_split(items, (0.8, 0.1, 0.1), seed=3)
    assert split == stratified_split(items, (0.8, 0.1, 0.1), seed=3)
    assert split != stratified_split(items, (0.8, 0.1, 0.1), seed=4)
    for label, n in (("a", 10), ("b", 20)):
        counts = [sum(x.startswith(label) for x in split[s]) for s in ("train", "val", "test")]
        assert counts == [round(n * 0.8), round(n * 0.1), round(n * 0.1)]
    assert sorted(sum(split.values(), [])) == sorted(items["a"] + items["b"])


def test_labels_readable_and_answers_matched():
    assert readable_label("fall_down") == "Fall down" and readable_label("clean-glass_door") == "Clean glass door"
    labels = ["Fall down", "Fall", "greet_mode", "To and fro"]
    assert normalize_answer("  Greet_Mode! ") == "greet mode"
    assert match_answer("fall down.", labels) == "Fall down"
    assert match_answer("The person is falling", labels) is None
    assert match_answer("I think it is fall down here", labels) == "Fall down"  # longest label wins
    assert match_answer("greet mode", labels) == "greet_mode"
    assert match_answer("to and fro or fall", labels) is None  # two labels: ambiguous


@pytest.mark.parametrize("template", ["llama_v2", "vicuna"])
def test_rank_scores_are_answer_log_likelihoods(tiny_llm_dir, clips_dir, template):
    """Labels of different token lengths sharing a prefix: each score of ``model.score`` (label
    tokens only, in chunks) equals the log-likelihood the training loss assigns to that answer,
    and the pick is the largest."""
    from omegaconf import OmegaConf

    from video_llama.common.registry import registry
    from video_llama.conversation.templates import conversation_ids, video_placeholder
    from video_llama.conversation.collate import pad_batch

    from conftest import tiny_config

    cfg = tiny_config(tiny_llm_dir, clips_dir / "train.json", clips_dir)
    torch.manual_seed(0)
    model = registry.get_model_class("video_llama").from_config(
        OmegaConf.merge(cfg.model_cfg, {"img_size": 112, "template": template})).eval()
    labels = ["Fall", "Fall down", "Fall down slowly", "Wave"]
    frames = torch.randn(1, 3, 8, 112, 112)
    question = "What is the action?"
    scores = model.score(frames, [question], labels, chunk_size=3)[0]  # two chunks: 3 + 1
    normalized = model.score(frames, [question], labels, length_normalize=True)[0]
    expected, lengths = [], []
    for label in labels:
        ids, targets = conversation_ids(model.llama_tokenizer, model.template, [(f"{video_placeholder(32)} {question}", label)])
        batch = pad_batch([{"input_ids": ids, "labels": targets}], model.llama_tokenizer.pad_token_id)
        with torch.no_grad():
            loss = model({"image": frames, **batch})["loss"]
        lengths.append(sum(t != -100 for t in targets))
        expected.append(-loss.item() * lengths[-1])
    assert scores.tolist() == pytest.approx(expected, abs=1e-4)
    assert normalized.tolist() == pytest.approx([e / n for e, n in zip(expected, lengths)], abs=1e-4)
    assert int(scores.argmax()) == max(range(len(labels)), key=lambda i: expected[i])


def test_metrics_and_files(tmp_path):
    labels = ["a", "b"]
    predictions = [{"video": "1", "label": "a", "prediction": "a"}, {"video": "2", "label": "a", "prediction": "b"},
                   {"video": "3", "label": "b", "prediction": "b"}, {"video": "4", "label": "b", "prediction": None}]
    metrics = compute_metrics(predictions, labels)
    assert metrics["top1"] == 0.5 and metrics["n"] == 4 and metrics["per_class"] == {"a": 0.5, "b": 0.5}
    assert metrics["unmatched"] == 1 and metrics["confusion_matrix"]["counts"] == [[1, 1, 0], [0, 1, 1]]
    write_results(predictions, metrics, tmp_path)
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "metrics.json").read_text())["top1"] == 0.5
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 4


def test_synthetic_dataset_layout(tmp_path):
    from video_llama.data_tools.synthetic import write_synthetic_dataset
    from video_llama.processors.video_decoding import load_video

    names = write_synthetic_dataset(tmp_path, classes=3, per_class=2, seed=1)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*"))
    assert names == ["to_and_fro", "circling", "falling_down"] and len(files) == 6
    assert {f.rsplit(".", 1)[1] for f in files} == {"mp4", "avi"}
    clip = load_video(tmp_path / files[0], n_frms=8, height=32, width=32)
    assert clip.num_frames >= 16


@pytest.mark.parametrize("motion", ["to_and_fro", "circling", "falling_down", "crossing"])
def test_synthetic_shape_stays_whole_on_the_wrapped_scene(motion):
    """With ``wrap`` a shape crossing an edge is split, never cut: every frame shows the same amount
    of shape wherever the path goes."""
    import numpy as np

    from video_llama.data_tools.synthetic import render_clip

    frames = render_clip(motion, np.random.default_rng(3), num_frames=24, size=48, wrap=True).astype(int)
    background = np.median(frames.reshape(-1, 3), axis=0)
    lit = (np.abs(frames - background).sum(axis=-1) > 120).sum(axis=(1, 2))
    assert lit.min() > 0.8 * lit.max(), lit


@pytest.mark.parametrize("wrap", [False, True])
def test_synthetic_position_says_nothing_of_the_class(wrap):
    """Where the shape is on average (with ``wrap``: mid-clip, on the whole scene) is spread evenly
    over the frame for every class. Paths that must fit in the frame fail this: crossing shapes
    stay near the middle."""
    import numpy as np

    from video_llama.data_tools import synthetic

    rng, margin = np.random.default_rng(0), 0.1
    low, high = (0, 1) if wrap else (margin, 1 - margin)
    for motion in ("to_and_fro", "circling", "falling_down", "crossing"):
        mids = []
        for _ in range(400):
            path = synthetic.MOTIONS[motion](np.arange(20.0), 20, rng)
            xs, ys = synthetic.scene_position(*path, rng) if wrap else synthetic.place_in_view(*path, margin, rng)
            mids.append([xs[10], ys[10]] if wrap else [xs.mean(), ys.mean()])
        for axis in np.array(mids).T:  # 100 expected in each quarter
            counts = np.histogram(axis, bins=4, range=(low, high))[0]
            assert counts.sum() == 400 and counts.min() > 70, (motion, counts)


def test_prepare_follows_symlinked_label_folders(action_root, tmp_path):
    root = tmp_path / "linked"
    root.mkdir()
    (root / "wave").symlink_to(action_root / "wave", target_is_directory=True)
    (root / "fall_down").symlink_to(action_root / "fall_down", target_is_directory=True)
    (root / "fall_down_again").symlink_to(root, target_is_directory=True)  # a loop is not followed forever
    report, labels = prepare(root, tmp_path / "out", n_frms=8,
                             label_map=_write(tmp_path / "map.yaml", "wave: Wave\nfall_down: Fall\nfall_down_again: Other\n"))
    assert report.counts["wave"]["found"] == 5 and report.counts["fall_down"]["found"] == 5


def _write(path, text):
    path.write_text(text)
    return path


def bad_folder(tmp_path, name, layout):
    """A folder of label sub-folders: layout {label: number of good clips, or 'broken'}."""
    root = tmp_path / name
    for label, clips in layout.items():
        if clips == "broken":
            (root / label).mkdir(parents=True)
            (root / label / "b.mp4").write_bytes(b"")
            continue
        for i in range(clips):
            write_video(root / label / f"c{i}.mp4", gradient_clip(12, 32, 32, seed=i))
    return root


@pytest.mark.parametrize("layout, expected", [
    ({"fall_down": 3, "Fall-Down": 3}, "all become the answer 'fall down'"),
    ({"wave": 3}, "only one label folder"),
    ({"wave": 3, "wipe": "broken"}, "no usable clip in label folder(s) ['wipe']"),
    ({"wave": "broken", "wipe": "broken"}, "no usable clip in label folder(s) ['wave', 'wipe']"),
])
@pytest.mark.slow
def test_prepare_refuses_data_that_cannot_train_a_classifier(tmp_path, layout, expected):
    import subprocess
    import sys

    root = bad_folder(tmp_path, "videos", layout)
    result = subprocess.run([sys.executable, "-m", "video_llama.cli.main", "prepare", "--root", str(root), "--out",
                             str(tmp_path / "anno")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "anno" / "labels.json").exists()


def test_prepare_merges_folders_only_when_the_label_map_says_so(tmp_path):
    root = bad_folder(tmp_path, "videos", {"wave": 3, "hello": 3, "wipe": 3})
    label_map = _write(tmp_path / "modes.yaml", "wave: greet_mode\nhello: greet_mode\nwipe: clean_mode\n")
    _, labels = prepare(root, tmp_path / "anno", label_map=label_map)
    assert json.loads((tmp_path / "anno" / "labels.json").read_text())["labels"] == ["clean_mode", "greet_mode"]


def test_chance_is_the_most_frequent_answer_plus_two_standard_errors():
    from video_llama.tasks.action_recognition import chance_bound

    balanced = [{"label": label} for label in "abcd" * 25]
    assert chance_bound(balanced, list("abcd")) == pytest.approx(0.25 + 2 * (0.25 * 0.75 / 100) ** 0.5)
    skewed = [{"label": "a"}] * 90 + [{"label": "b"}] * 10  # naming "a" always scores 0.9
    assert chance_bound(skewed, ["a", "b"]) == pytest.approx(0.9 + 2 * (0.9 * 0.1 / 100) ** 0.5)
    assert chance_bound([{"label": "x"}], ["a"]) is None


def test_the_stream_eval_yaml_on_a_prepared_folder_builds_only_the_splits_it_evaluates(tiny_llm_dir, clips_dir, tmp_path):
    """evaluate.py with anno_dir a folder of train/val/test (as `prepare` writes it): the train split,
    which the evaluation YAML gives no processor for, and val, whose stop windows need a rest class
    this data has not, are not built at all."""
    import shutil

    from video_llama.jobs.experiment import evaluate, train

    from conftest import REPO_ROOT, TINY_CONFIG

    run = train(["--cfg-path", str(TINY_CONFIG), "--options", f"model.llama_model={tiny_llm_dir}",
                 f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
                 f"datasets.webvid_instruct.build_info.anno_dir={clips_dir / 'train.json'}",
                 f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}", "run.max_epoch=1",
                 "run.iters_per_epoch=1", f"run.output_dir={tmp_path / 'runs'}"])["run_dir"]
    anno = tmp_path / "anno"
    anno.mkdir()
    for split in ("train", "val", "test"):
        shutil.copy(clips_dir / "train.json", anno / f"{split}.json")
    summary = evaluate(["--cfg-path", str(REPO_ROOT / "eval_configs/quickstart_stream_tiny.yaml"), "--options",
                        f"model.ckpt={run}", f"model.llama_model={tiny_llm_dir}",
                        f"datasets.webvid_instruct.tokenizer_name={tiny_llm_dir}",
                        f"datasets.webvid_instruct.build_info.anno_dir={anno}",
                        f"datasets.webvid_instruct.build_info.videos_dir={clips_dir}",
                        "datasets.webvid_instruct.vis_processor.eval.n_frms=4", f"run.output_dir={tmp_path / 'out'}"])
    assert 0 <= summary["test_top1"] <= 1, summary  # before: the train split failed to build
