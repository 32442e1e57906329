"""Annotations + video files → WebDataset tar shards (``video-llama export-shards --anno F|DIR
--videos-dir D --out DIR``), for clusters where reading millions of small files starves the GPUs.

Each split (a `prepare` folder gives train/val/test) becomes ``OUT/<split>-000000.tar``, ... Each
sample is ``<key>.<ext>`` (the video's original bytes, or with ``--reencode 224@8`` the clip
re-encoded to 224 × 224 at 8 fps, short GOP, no B-frames, checked with the decoder) and
``<key>.json`` (the record: ``video``, ``QA``, and the source path, frame count and fps; a re-encode
is marked ``keyframes_only``, so readers decode only the sampled frames). A shard
holds a fixed range of its split's records (``--samples-per-shard``, or grouped by the source
files' sizes with ``--shard-size``), minus the unreadable ones (reported by name and left out), so
the layout does not depend on what failed or on how many ``--workers`` wrote it. A shard is written
under a temporary name and renamed when complete, with fixed tar metadata: a re-run skips finished
shards and rewrites unfinished ones byte for byte, and a folder holding shards made with other
settings is refused (``overwrite``: emptied first), so two exports never mix. Keys are numbers, so no member name can leave
the output folder. ``OUT/index.json`` lists the shards, their sample counts and how they were made.

With ``--frames N`` a sample holds N frames sampled uniformly ahead of time, as JPEGs
``<key>.000.jpg`` ... (at ``--reencode``'s SIZE, 224 by default), instead of a video: the fastest
to read, at the price of fixing which frames training can ever see (the processors sample among
the N, so keep N above the model's ``n_frms`` for headtail to vary).
"""

import contextlib
import json
import logging
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

from video_llama.common.errors import UserError
from video_llama.datasets.datasets.base_video_dataset import read_quarantine, video_path
from video_llama.datasets.datasets.shard_dataset import frame_member
from video_llama.processors.video_decoding import VIDEO_EXTENSIONS, file_problem

SHARD_MTIME = 0.0  # fixed member times: the same input gives the same bytes
MADE_WITH = ".export.json"  # how the shards of a folder are being made, written before the first shard

logger = logging.getLogger(__name__)


def split_files(anno):
    """{split: [annotation files]} for a file (train), a `prepare` folder or {split: file(s)}, read as
    the ``webvid_instruct`` builder reads ``build_info.anno_dir``."""
    from omegaconf import OmegaConf

    from video_llama.datasets.builders.video_builders import VideoInstructBuilder

    splits = VideoInstructBuilder.split_files(OmegaConf.create({"anno_dir": anno if isinstance(anno, dict) else str(anno)}))
    if not splits:
        raise UserError(f"--anno: {anno} holds no train/val/test.json; run `video-llama prepare` or name a file")
    return splits


def parse_reencode(spec):
    """``SIZE[@FPS]`` → (size, fps or None)."""
    size, _, fps = str(spec).partition("@")
    try:
        size, fps = int(size), (float(fps) if fps else None)
    except ValueError:
        raise UserError(f"--reencode {spec}: expected SIZE[@FPS], e.g. 224@8") from None
    if size < 16 or size % 2 or (fps is not None and fps <= 0):
        raise UserError(f"--reencode {spec}: SIZE must be even and at least 16, FPS positive")
    return size, fps


def reencode(data, size, fps, scratch):
    """The clip re-encoded small: size × size (as the processors resize), at ``fps`` (None: the
    source's), H.264 of keyframes only, tuned for decoding, checked by decoding it back. Keyframes
    only, a reader decodes just the sampled frames (``KeyframeVideo``): on the sample clips at
    224²@8 fps, 8 frames, one process, 4.1 ms a clip (478 KiB; decord, which seeks per frame: 13.4 ms)
    against 224 ms for the originals."""
    from video_llama.data_tools.video_writer import write_video
    from video_llama.processors.video_decoding import VideoDecodeError, load_video, probe_video

    num_frames, source_fps = probe_video(data)
    fps = Fraction(min(fps or source_fps, source_fps)).limit_denominator(1001)  # 29.97 → 30000/1001
    keep = max(1, round(num_frames * fps / source_fps))
    frames = load_video(data, keep, size, size, "uniform").frames.permute(1, 2, 3, 0).numpy()  # T, H, W, C
    path = write_video(scratch, frames, fps=fps, gop=1)
    try:
        small = path.read_bytes()
    finally:
        path.unlink()
    frame_count, small_fps = probe_video(small)
    if frame_count != keep:
        raise VideoDecodeError(f"re-encoded clip decodes to {frame_count} frames, {keep} were written")
    return small, frame_count, small_fps


class Content(NamedTuple):
    """What a sample stores of its clip: the original bytes (all None), a re-encode (``size``,
    ``fps``) or ``frames`` JPEGs at ``size``."""

    size: int = None
    fps: float = None
    frames: int = None

    def describe(self):
        if self.frames:
            return f"{self.frames} frames at {self.size}x{self.size} (JPEG)"
        return f"re-encoded {self.size}@{self.fps:g}" if self.fps else f"re-encoded {self.size} (source fps)" if self.size else "original bytes"


def content_from_args(reencode=None, frames=None):
    size, fps = parse_reencode(reencode) if reencode else (None, None)
    if frames is not None:
        if not 1 <= frames <= 999:
            raise UserError(f"--frames {frames}: store between 1 and 999 frames per clip")
        if fps is not None:
            raise UserError(f"--frames with --reencode {reencode}: stored frames have no frame rate; give --reencode SIZE alone")
        return Content(size or 224, None, frames)
    return Content(size, fps)


def presample(data, frames, size):
    """(JPEG members, source frame count, fps, the stored frames' source indices)."""
    from video_llama.processors.video_decoding import encode_frames, load_video

    clip = load_video(data, frames, size, size, "uniform")
    members = {frame_member(j): image for j, image in enumerate(encode_frames(clip.frames))}
    return members, clip.num_frames, clip.fps, clip.indices


def _sample(key, record, videos_dir, content=Content(), scratch=None):
    """(tar sample, None) or (None, why it is left out)."""
    from video_llama.processors.video_decoding import VideoDecodeError, probe_video

    path = video_path(record, videos_dir)
    ext = path.suffix.lower().lstrip(".")
    if f".{ext}" not in VIDEO_EXTENSIONS:
        return None, f"not a video file type ({', '.join(sorted(VIDEO_EXTENSIONS))})"
    problem = file_problem(path)
    if problem:
        return None, problem
    data = path.read_bytes()  # read once: probed from memory, then stored
    extra = {}
    try:
        if content.frames:
            members, num_frames, fps, indices = presample(data, content.frames, content.size)
            extra = {"frame_indices": indices}
        elif content.size:
            small, num_frames, fps = reencode(data, content.size, content.fps, scratch)
            members, extra = {"mp4": small}, {"keyframes_only": True}  # read by decoding the sampled frames alone
        else:
            num_frames, fps = probe_video(data)
            members = {ext: data}
    except VideoDecodeError as err:
        return None, f"{path}: {err}"
    meta = {**record, "source": str(path), "num_frames": num_frames, "fps": fps, **extra}
    return {"__key__": key, **members, "json": json.dumps(meta).encode()}, None


def shard_ranges(records, videos_dir, samples_per_shard=None, shard_mb=None):
    """[(start, end)] of the records each shard holds: a fixed count, or consecutive records whose
    source files add up to about ``shard_mb`` (sizes read before anything is written, so the layout
    is fixed for re-runs)."""
    if not shard_mb:
        return [(start, min(start + samples_per_shard, len(records))) for start in range(0, len(records), samples_per_shard)]
    ranges, start, size = [], 0, 0
    for i, record in enumerate(records):
        path = video_path(record, videos_dir)
        size += path.stat().st_size if path.is_file() else 0
        if size >= shard_mb * 1e6:
            ranges.append((start, i + 1))
            start, size = i + 1, 0
    return ranges + ([(start, len(records))] if start < len(records) else [])


def _export_one(task):
    """Write one shard (and first its report) unless both exist; returns the report."""
    final, split, start, records, videos_dir, content = task
    report = final.with_name(f".{final.name}.json")  # what the shard holds and left out; written first
    if not (final.is_file() and report.is_file()):
        samples, left_out = [], []
        scratch = final.with_name(f".{final.name}.clip-{os.getpid()}.mp4")
        for offset, record in enumerate(records):
            sample, why = _sample(f"{start + offset:09d}", record, videos_dir, content, scratch)
            if sample is None:
                left_out.append({"split": split, "video": record["video"], "why": why})
            else:
                samples.append(sample)
        report.write_text(json.dumps({"samples": len(samples), "left_out": left_out}))
        _write_shard(final, samples)
    return json.loads(report.read_text())


def _write_shard(final, samples):
    import webdataset as wds

    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as stream:
            writer = wds.TarWriter(stream, mtime=SHARD_MTIME)
            for sample in samples:
                writer.write(sample)
            writer.close()
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def claim_folder(out, made_with, overwrite=False):
    """Make ``out`` this export's, never a mix: shards made with the same settings (``made_with``)
    stay, so a stopped export resumes; shards made otherwise, or by settings no longer known, are
    refused with the differences named, or with ``overwrite`` deleted with their index first."""
    out.mkdir(parents=True, exist_ok=True)
    earlier = sorted(out.glob("*.tar")) + [p for p in (out / "index.json",) if p.is_file()]
    if earlier:
        before = None
        for record, key in ((out / MADE_WITH, None), (out / "index.json", "made_with")):
            if before is None and record.is_file():
                try:
                    data = json.loads(record.read_text())
                    before = data.get(key) if key else data
                except (ValueError, AttributeError):
                    before = None
        if before != made_with:
            shards = sum(p.suffix == ".tar" for p in earlier)
            if not overwrite:
                differ = (", ".join(f"{k}: {before.get(k)!r} then, {v!r} now" for k, v in made_with.items()
                                    if before.get(k) != v) if isinstance(before, dict) else "settings not recorded")
                raise UserError(f"--out {out} holds {shards} shard(s) made with other settings ({differ}); shards "
                                "of two exports must not mix in one folder: give a new --out, or add --overwrite to "
                                "delete them (and their index.json) first")
            for path in [*earlier, *out.glob(".*.tar.json"), out / "labels.json"]:
                path.unlink(missing_ok=True)
            logger.warning("--overwrite: deleted the %d shard(s) of an earlier export in %s", shards, out)
    (out / MADE_WITH).write_text(json.dumps(made_with, indent=1))


def export_shards(anno, videos_dir, out, samples_per_shard=1000, shard_mb=None, reencode=None, workers=1,
                  progress=True, frames=None, overwrite=False, quarantine=None):
    """Write the shards and ``index.json``; returns the index (a dict). ``reencode``: SIZE[@FPS];
    ``frames``: store that many frames per clip instead of a video. A folder holding shards made
    with other settings is refused, or with ``overwrite`` emptied of them first (see
    :func:`claim_folder`). ``quarantine``: check-data's list; its clips are left out unopened."""
    from multiprocessing import get_context

    from tqdm import tqdm

    from video_llama.datasets.datasets.video_instruct_dataset import read_instruct_annotations

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the shards (it is created if missing)")
    content = content_from_args(reencode, frames)
    splits = split_files(anno)
    made_with = {"samples_per_shard": None if shard_mb else samples_per_shard, "shard_mb": shard_mb,
                 "videos_dir": str(videos_dir), "content": content.describe(),
                 "annotations": {split: [str(f) for f in files] for split, files in splits.items()},
                 "quarantine": str(quarantine) if quarantine else None}
    quarantined = read_quarantine(quarantine, "--quarantine") if quarantine else set()
    claim_folder(out, made_with, overwrite)
    for stale in [*out.glob(".*.tar.tmp-*"), *out.glob(".*.tar.clip-*")]:  # left by a run that was killed
        stale.unlink()
    index = {"splits": {}, "left_out": [], "made_with": made_with}
    tasks = []
    for split, files in splits.items():
        records = read_instruct_annotations(files)
        index["left_out"] += [{"split": split, "video": r["video"], "why": f"quarantined ({quarantine})"}
                              for r in records if r["video"] in quarantined]
        records = [r for r in records if r["video"] not in quarantined]
        index["splits"][split] = {"shards": [], "samples": [], "total": 0}
        for number, (start, end) in enumerate(shard_ranges(records, videos_dir, samples_per_shard, shard_mb)):
            tasks.append((out / f"{split}-{number:06d}.tar", split, start, records[start:end], videos_dir, content))
    for stale in set(out.glob("*.tar")) - {final for final, *_ in tasks}:  # the same settings, fewer records now
        logger.warning("%s: not a shard of this export (the annotations have fewer records now); deleted", stale)
        stale.unlink()
        stale.with_name(f".{stale.name}.json").unlink(missing_ok=True)
    bar = tqdm(total=len(tasks), desc="shards", disable=not progress)
    with get_context("spawn").Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        reports = pool.imap(_export_one, tasks) if pool else map(_export_one, tasks)
        for (final, split, *_), done in zip(tasks, reports):  # in order, whichever worker wrote it
            entry = index["splits"][split]
            entry["shards"].append(final.name)
            entry["samples"].append(done["samples"])
            entry["total"] += done["samples"]
            index["left_out"] += done["left_out"]
            bar.update()
    bar.close()
    labels = next((folder / "labels.json" for folder in {Path(f).parent for fs in splits.values() for f in fs}
                   if (folder / "labels.json").is_file()), None)
    if labels is not None:  # `prepare`'s label list travels with the shards (evaluation reads it)
        shutil.copyfile(labels, out / "labels.json")
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index
