"""A folder of labelled videos (``root/<label>/.../<video>``) → instruction annotation JSON.

Every video is probed (opened and a frame decoded with decord, the training backend) before it is
written into an annotation file: unreadable files are reported and left out, and so are clips
shorter than ``n_frms`` unless the user keeps them (frames then repeat) or loops them (a longer
copy is written). Splits are stratified per label and seeded.
"""

import json
import logging
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from video_llama.common.errors import UserError
from video_llama.processors.image_processors import IMAGE_EXTENSIONS
from video_llama.processors.video_decoding import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)


class PrepareError(UserError, ValueError):
    """A folder that cannot give a usable dataset; the message says which folder and what to do."""


SPLITS = ("train", "val", "test")


def readable_label(folder_name):
    """``fall_down`` → ``Fall down``."""
    text = " ".join(folder_name.replace("_", " ").replace("-", " ").split())
    return text[:1].upper() + text[1:]


def load_label_map(path):
    """A YAML or JSON mapping folder name → answer text (e.g. ``wave: greet_mode``)."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--label-map: {path} not found")
    mapping = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise PrepareError(f"--label-map: {path} must map folder names to answer strings, e.g. 'wave: greet_mode'")
    return {str(k): v for k, v in mapping.items()}


LOOPED_DIR = "_looped"  # where --loop-short writes longer copies (under root, so paths stay relative)


def find_videos(root, extensions=VIDEO_EXTENSIONS):
    """{label folder: [video (or other ``extensions``) paths relative to root]}, nested sub-folders
    included; folders whose name starts with ``_`` or ``.`` (such as our own ``_looped``) are not labels."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root: {root} is not a folder")
    found = defaultdict(list)
    for path in sorted(_walk_files(root)):
        if path.suffix.lower() in extensions and path.is_file():
            rel = path.relative_to(root)
            if rel.parts[0].startswith(("_", ".")):
                continue
            if len(rel.parts) < 2:
                logger.warning("%s is not inside a label folder; skipped", rel)
                continue
            found[rel.parts[0]].append(str(rel))
    if not found:
        what = "images" if extensions == IMAGE_EXTENSIONS else "videos"
        raise FileNotFoundError(f"--root: no {what} ({', '.join(sorted(extensions))}) under {root}/<label>/")
    return dict(found)


def _walk_files(root):
    """Every file below ``root``, following folder links (a label folder is often a link to where
    the clips really are), each real folder once (a link loop is not followed twice)."""
    seen = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        yield from (Path(folder) / name for name in files)


def check_labels(labels, mapped):
    """Two folders whose answers read the same once normalised can never be told apart: an error,
    unless a --label-map gives them the very same answer on purpose (two folders, one mode)."""
    from video_llama.conversation.answers import normalize_answer

    by_norm = defaultdict(list)
    for folder, answer in sorted(labels.items()):
        by_norm[normalize_answer(answer)].append(folder)
    for norm, folders in by_norm.items():
        answers = sorted({labels[f] for f in folders})
        if len(folders) > 1 and (len(answers) > 1 or not mapped):
            raise PrepareError(
                f"folders {folders} all become the answer {norm!r} ({', '.join(map(repr, answers))}), so the model "
                "could never tell them apart; rename the folders, or merge them on purpose with a --label-map "
                f"that gives each the same answer (e.g. {folders[0]}: {answers[0]})"
            )


def probe(path):
    """(number of frames, None) or (0, error message) for a clip, as decord will read it."""
    import decord

    from video_llama.processors.video_decoding import lacks_video_stream, native_error_reason, native_stderr, no_video_stream

    if Path(path).stat().st_size == 0:
        return 0, "empty file (0 bytes)"
    try:
        with native_stderr() as captured:
            reader = decord.VideoReader(str(path), num_threads=1)
            count = len(reader)
            if count == 0:
                return 0, "no frames"
            reader[count // 2].asnumpy()
            reader[count - 1].asnumpy()
            return count, None
    except Exception as err:  # decord raises DECORDError / RuntimeError on broken files
        if lacks_video_stream(path):
            return 0, str(no_video_stream(path))
        return 0, native_error_reason(err, captured)[:200]


def probe_image(path):
    """(1, None) or (0, error message) for an image, as the image datasets will read it."""
    from video_llama.processors.image_processors import load_image
    from video_llama.processors.video_decoding import VideoDecodeError

    try:
        load_image(path)
        return 1, None
    except VideoDecodeError as err:
        return 0, str(err)[:200]


def loop_clip(src, dst, min_frames):
    """Write a copy of a short clip played forward and backward until it has ``min_frames``."""
    import decord

    from video_llama.data_tools.video_writer import write_video

    reader = decord.VideoReader(str(src), num_threads=1)
    frames = reader.get_batch(list(range(len(reader)))).asnumpy()
    cycle = np.concatenate([frames, frames[::-1][1:-1]]) if len(frames) > 2 else frames
    repeats = -(-min_frames // len(cycle))
    looped = np.concatenate([cycle] * repeats)[: max(min_frames, len(frames))]
    fps = float(reader.get_avg_fps()) or 8.0
    write_video(dst, looped, fps=round(fps))


@dataclass
class PrepareReport:
    counts: dict = field(default_factory=lambda: defaultdict(Counter))  # label → Counter of outcomes
    unreadable: list = field(default_factory=list)
    short: list = field(default_factory=list)

    def table(self, labels):
        columns = ["found", "unreadable", "short_left_out", "short_kept", "looped", *SPLITS]
        width = max(12, *(len(labels[k]) for k in self.counts))
        lines = [f"{'label':<{width}} " + " ".join(f"{c:>14}" for c in columns)]
        for folder in sorted(self.counts):
            lines.append(f"{labels[folder]:<{width}} " + " ".join(f"{self.counts[folder][c]:>14}" for c in columns))
        total = Counter()
        for counter in self.counts.values():
            total.update(counter)
        lines.append(f"{'total':<{width}} " + " ".join(f"{total[c]:>14}" for c in columns))
        return "\n".join(lines)


def stratified_split(items_by_label, ratios, seed):
    """{split: [items]} with each label divided by ``ratios`` (train, val, test), seeded."""
    rng = random.Random(seed)
    splits = {s: [] for s in SPLITS}
    for label in sorted(items_by_label):
        items = sorted(items_by_label[label])
        rng.shuffle(items)
        n = len(items)
        n_val = int(round(n * ratios[1]))
        n_test = int(round(n * ratios[2]))
        if n >= 3:  # every split gets each label once there are enough clips
            n_val, n_test = max(n_val, 1 if ratios[1] > 0 else 0), max(n_test, 1 if ratios[2] > 0 else 0)
        n_train = n - n_val - n_test
        splits["train"] += items[:n_train]
        splits["val"] += items[n_train:n_train + n_val]
        splits["test"] += items[n_train + n_val:]
    return splits


def prepare(root, out, label_map=None, questions_file=None, ratios=(0.8, 0.1, 0.1), seed=0, n_frms=8,
            keep_short=False, loop_short=False, all_questions=False, split_list=None, images=False):
    """Write ``out/{train,val,test}.json`` and ``out/labels.json``; returns the report. ``images``:
    the folders hold images, written as ``{"image": ...}`` entries (the ``image_instruct`` builder)."""
    from video_llama.common.config import PROMPTS_DIR
    from video_llama.conversation import load_questions

    root, out = Path(root), Path(out)
    videos = find_videos(root, IMAGE_EXTENSIONS if images else VIDEO_EXTENSIONS)
    mapping = load_label_map(label_map) if label_map else {}
    unmapped = sorted(set(videos) - set(mapping)) if mapping else []
    if unmapped:
        raise PrepareError(f"--label-map has no entry for folder(s) {unmapped}; add them (folder: answer)")
    labels = {folder: mapping.get(folder, readable_label(folder)) for folder in videos}
    check_labels(labels, mapped=bool(mapping))
    default_questions = "image_questions.txt" if images else "action_questions.txt"
    questions = load_questions(questions_file or PROMPTS_DIR / default_questions)
    if not questions:
        raise PrepareError(f"--questions: {questions_file} has no questions (one per line)")

    report = PrepareReport()
    usable = defaultdict(list)  # folder → [relative path written into the annotations]
    for folder, paths in videos.items():
        for rel in paths:
            report.counts[folder]["found"] += 1
            frames, error = probe_image(root / rel) if images else probe(root / rel)
            if error:
                report.unreadable.append((rel, error))
                report.counts[folder]["unreadable"] += 1
                continue
            if frames < n_frms and not images:
                if loop_short:
                    looped = Path(LOOPED_DIR) / Path(rel).with_suffix(".mp4")
                    loop_clip(root / rel, root / looped, n_frms)
                    report.counts[folder]["looped"] += 1
                    rel = str(looped)
                elif keep_short:
                    report.counts[folder]["short_kept"] += 1
                else:
                    report.short.append((rel, frames))
                    report.counts[folder]["short_left_out"] += 1
                    continue
            usable[folder].append(rel)

    empty = sorted(folder for folder in videos if not usable[folder])
    if empty:
        details = {f: dict(report.counts[f]) for f in empty}
        raise PrepareError(f"no usable clip in label folder(s) {empty} under {root} ({details}; unreadable: "
                           f"{[r for r, _ in report.unreadable if Path(r).parts[0] in empty][:5]}); fix or replace "
                           "the clips (--keep-short keeps short ones), or remove the folder")
    if len(usable) < 2:
        raise PrepareError(f"only one label folder ({sorted(usable)}) under {root}: a classifier needs at least two "
                           f"labels; put each action in its own folder, {root}/<label>/<clip>")
    if split_list:
        splits = _read_split_list(split_list, usable)
    else:
        splits = stratified_split(usable, ratios, seed)
    folder_of = {rel: folder for folder, rels in usable.items() for rel in rels}
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        entries = []
        for rel in sorted(splits[split]):
            answer = labels[folder_of[rel]]
            asked = questions if all_questions else [rng.choice(questions)]
            entries += [{"image" if images else "video": rel, "QA": [{"q": q, "a": answer}]} for q in asked]
            report.counts[folder_of[rel]][split] += 1
        (out / f"{split}.json").write_text(json.dumps(entries, indent=1))
    (out / "labels.json").write_text(json.dumps(
        {"labels": sorted(set(labels.values())), "folders": labels, "root": str(root.resolve())}, indent=1))
    return report, labels


def _read_split_list(path, usable):
    """A JSON {split: [relative video paths]} chosen by the user (e.g. the dataset's official split)."""
    try:
        listed = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PrepareError(f"--split-list: {path} is not a JSON {{split: [paths]}} file: {err}") from err
    known = {rel for rels in usable.values() for rel in rels}
    unknown = [rel for split in listed for rel in listed[split] if rel not in known]
    if unknown:
        logger.warning("--split-list names %d video(s) that are missing or left out, e.g. %s", len(unknown), unknown[:5])
    return {split: [rel for rel in listed.get(split, []) if rel in known] for split in SPLITS}
