"""Check a dataset before renting the cluster: every clip probed in parallel with the decoders
training uses, the problems named per file, a quarantine list that training and export honour.

Per clip: missing, empty, not a regular file (a FIFO or a device would block a decoder forever,
so it is never opened), no video stream, unreadable, timed out (reading and decoding took longer
than ``decode_timeout_s``: a stalled mount, a pathological stream), too short for ``n_frms``, no frame rate,
extreme frame size, and files whose bytes are the same as another's (duplicates: kept, reported).
Notes on clips training can use but that cost or mislead (reported, not quarantined): a variable
frame rate (windows in seconds assume even frame times) and keyframes far apart (every sampled
frame decodes from the keyframe before it: slow to seek).
Across the data: labels that read the same once normalised (``prepare``'s check). The report is
JSON; ``quarantine.txt`` beside it lists the ``video`` paths of the clips training cannot use, one
a line, for ``build_info.quarantine`` and ``export-shards --quarantine``.
"""

import hashlib
import json
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from video_llama.conversation.answers import normalize_answer
from video_llama.data_tools.shards import split_files
from video_llama.datasets.datasets.base_video_dataset import QUARANTINE, video_path
from video_llama.datasets.datasets.video_instruct_dataset import read_instruct_annotations
from video_llama.processors.video_decoding import (VIDEO_EXTENSIONS, VideoDecodeError, file_problem, load_video,
                                                   with_deadline)

MAX_SIDE = 8192  # a frame wider or taller than this is reported (decoding it costs seconds and GiBs)
UNEVEN_FRAME_TIMES = 1.5  # longest / shortest frame interval above this: a variable frame rate
SLOW_SEEK_S = 10.0  # keyframes further apart than this (seconds; x264's default is 250 frames, 10 s at 25 fps):
                   # each sampled frame decodes that much video


def items_of(anno=None, videos_dir=None, folder=None):
    """[(video as annotated, its path, split, first answer)] of an annotation file or ``prepare``
    folder (``anno``, paths under ``videos_dir``), or of every video file under ``folder`` (no split
    or answer)."""
    if folder is not None:
        root = Path(folder)
        return [(str(p.relative_to(root)), p, None, None) for p in sorted(root.rglob("*"))
                if p.suffix.lower() in VIDEO_EXTENSIONS]
    items = []
    for split, files in split_files(anno).items():
        for record in read_instruct_annotations(files):
            items.append((record["video"], video_path(record, videos_dir), split, record["QA"][0]["a"]))
    return items


def check_clip(path, n_frms, backend):
    """(problem or None, detail, sha1 of the bytes or None, [(note, detail)]) of one clip."""
    path = Path(path)
    problem = file_problem(path)  # a FIFO is never opened: a decoder would block on it
    if problem:
        kind = ("missing" if "not found" in problem else "empty" if "0 bytes" in problem
                else "unreadable" if problem.startswith("cannot read") else "not a regular file")
        return kind, problem, None, []
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    sha1 = digest.hexdigest()
    height, width, times, keyframes = _stream_facts(path)
    if max(height, width) > MAX_SIDE:  # before decoding: that is what would cost seconds and GiBs
        return "extreme size", f"{width}x{height} frames", sha1, []
    try:
        clip = load_video(path, n_frms, 32, 32, "uniform", backend)  # the frames training samples, decoded
    except VideoDecodeError as err:
        problem = "no video stream" if "holds no video stream" in str(err) else "unreadable"
        return problem, str(err), sha1, []
    frames, fps = clip.num_frames, clip.fps
    if frames < n_frms:
        return "too short", f"{frames} frames, fewer than n_frms={n_frms} (frames would repeat)", sha1, []
    if not fps:
        return "no frame rate", "the container gives no frame rate: windows in seconds cannot be cut", sha1, []
    return None, f"{frames} frames at {fps:g} fps, {width}x{height}", sha1, timing_notes(times, keyframes)


def _stream_facts(path):
    """(height, width, presentation times in s, keyframe times in s) as the container gives them,
    from its packets (demuxed, not decoded); zeros and none when PyAV cannot tell (the decoders'
    verdict stands)."""
    import av

    times, keyframes = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            height, width = stream.codec_context.height, stream.codec_context.width
            for packet in container.demux(stream):
                if packet.pts is not None:
                    times.append(float(packet.pts * stream.time_base))
                    if packet.is_keyframe:
                        keyframes.append(times[-1])
    except Exception:  # av's errors
        return 0, 0, [], []
    return height, width, sorted(times), sorted(keyframes)


def timing_notes(times, keyframes):
    """[(note, detail)] for frame times that vary (a variable frame rate) and keyframes far apart."""
    notes = []
    gaps = np.diff(times)
    gaps = gaps[gaps > 0]
    if len(gaps) >= 2 and gaps.max() > UNEVEN_FRAME_TIMES * gaps.min():
        notes.append(("variable frame rate", f"frame intervals from {gaps.min() * 1000:.0f} to {gaps.max() * 1000:.0f} ms: "
                      "windows in seconds assume even frame times; re-encode at a constant rate (ffmpeg -fps_mode cfr)"))
    if keyframes and times:
        apart = max(np.diff([*keyframes, times[-1]]), default=0.0)
        if apart > SLOW_SEEK_S:
            notes.append(("slow to seek", f"keyframes up to {apart:.1f} s apart: each sampled frame decodes up to that much "
                          "video; re-encode with a keyframe every second or so (ffmpeg -i IN -g 25 OUT, or shards: `export-shards --reencode`)"))
    return notes


def _check_one(task):
    video, path, n_frms, backend, timeout_s = task
    try:
        return (video, *with_deadline(check_clip, path, timeout_s, n_frms, backend))
    except VideoDecodeError as err:  # only the deadline: check_clip names what it finds itself
        return video, "timed out", str(err), None, []
    except OSError as err:  # a file that cannot be read at all (permissions, an I/O error): named, the check goes on
        return video, "unreadable", f"{path}: {err}", None, []


def check_data(anno=None, videos_dir=None, folder=None, n_frms=8, workers=2, backend="decord", progress=True,
               decode_timeout_s=10.0):
    """The report (a dict) of every clip of ``anno`` (with ``videos_dir``) or ``folder``; a clip
    whose check takes longer than ``decode_timeout_s`` (see ``with_deadline``) is reported timed out."""
    from tqdm import tqdm

    items = items_of(anno, videos_dir, folder)
    tasks = [(video, path, n_frms, backend, decode_timeout_s) for video, path, _, _ in items]
    started = time.monotonic()
    with ProcessPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(_check_one, tasks, chunksize=8), total=len(tasks), desc="clips",
                            disable=not progress))
    seconds = time.monotonic() - started
    problems = [{"video": video, "split": split, "problem": problem, "detail": detail}
                for (video, problem, detail, _, _), (_, _, split, _) in zip(results, items) if problem]
    notes = [{"video": video, "note": note, "detail": detail}
             for video, *_, found in results for note, detail in found]
    by_hash = defaultdict(set)  # a clip listed in two splits is one file, not a duplicate
    for video, _, _, sha1, _ in results:
        if sha1:
            by_hash[sha1].add(video)
    answers = {answer for *_, answer in items if answer is not None}
    by_norm = defaultdict(set)
    for answer in answers:
        by_norm[normalize_answer(answer)].add(answer)
    return {"checked": len(results), "seconds": round(seconds, 3), "files_per_s": round(len(results) / max(seconds, 1e-9), 1),
            "workers": workers, "n_frms": n_frms, "backend": backend,
            "counts": {kind: sum(p["problem"] == kind for p in problems) for kind in sorted({p["problem"] for p in problems})},
            "problems": problems,
            "notes": notes,  # usable clips that cost or mislead: reported, not quarantined
            "note_counts": dict(sorted(Counter(n["note"] for n in notes).items())),
            "duplicates": sorted(sorted(videos) for videos in by_hash.values() if len(videos) > 1),
            "colliding_labels": sorted(sorted(group) for group in by_norm.values() if len(group) > 1),
            "quarantine": sorted({p["video"] for p in problems})}


def write_report(report, out):
    """``out`` (the JSON report) and ``quarantine.txt`` beside it; returns the quarantine file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    quarantine = out.with_name(QUARANTINE)
    quarantine.write_text("".join(f"{video}\n" for video in report["quarantine"]))
    return quarantine
