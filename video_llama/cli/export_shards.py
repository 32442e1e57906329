"""``video-llama export-shards --anno F|DIR --videos-dir D --out DIR``: annotations + video files →
WebDataset tar shards, for clusters where reading millions of small files starves the GPUs.

Each split (a `prepare` folder gives train/val/test) becomes ``OUT/<split>-000000.tar``, ... Each
sample is ``<key>.<ext>`` (the video's original bytes) and ``<key>.json`` (the record: ``video``,
``QA``, and the source path, frame count and fps). Shard ``i`` holds records ``i × N`` to
``(i + 1) × N - 1`` of its split, minus the unreadable ones (reported by name and left out), so the
layout does not depend on what failed. A shard is written under a temporary name and renamed when
complete, with fixed tar metadata: a re-run skips finished shards and rewrites unfinished ones
byte for byte. Keys are numbers, so no member name can leave the output folder.
``OUT/index.json`` lists the shards, their sample counts and how they were made.

Not yet here (issue 16): re-encoding, pre-sampled frames, parallel workers, and reading shards in
the builders.
"""

import argparse
import json
import os
from pathlib import Path

from video_llama.cli.action_folders import VIDEO_EXTENSIONS
from video_llama.common.errors import UserError

SHARD_MTIME = 0.0  # fixed member times: the same input gives the same bytes


def split_files(anno):
    """{split: [annotation files]} for a file (train), a `prepare` folder or {split: file(s)}, read as
    the ``webvid_instruct`` builder reads ``build_info.anno_dir``."""
    from omegaconf import OmegaConf

    from video_llama.datasets.builders.video_builders import VideoInstructBuilder

    splits = VideoInstructBuilder.split_files(OmegaConf.create({"anno_dir": anno if isinstance(anno, dict) else str(anno)}))
    if not splits:
        raise UserError(f"--anno: {anno} holds no train/val/test.json; run `video-llama prepare` or name a file")
    return splits


def _sample(key, record, videos_dir):
    """(tar sample, None) or (None, why it is left out)."""
    from video_llama.processors.video_decoding import VideoDecodeError, probe_video

    path = Path(record["video"]) if Path(record["video"]).is_absolute() else Path(videos_dir) / record["video"]
    ext = path.suffix.lower().lstrip(".")
    if f".{ext}" not in VIDEO_EXTENSIONS:
        return None, f"not a video file type ({', '.join(sorted(VIDEO_EXTENSIONS))})"
    if not path.is_file():
        return None, f"video file not found: {path}"
    data = path.read_bytes()  # read once: probed from memory, then stored
    try:
        num_frames, fps = probe_video(data)
    except VideoDecodeError as err:
        return None, f"{path}: {err}"
    meta = {**record, "source": str(path), "num_frames": num_frames, "fps": fps}
    return {"__key__": key, ext: data, "json": json.dumps(meta).encode()}, None


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


def export_shards(anno, videos_dir, out, samples_per_shard=1000, progress=True):
    """Write the shards and ``index.json``; returns the index (a dict)."""
    from tqdm import tqdm

    from video_llama.datasets.datasets.video_instruct_dataset import read_instruct_annotations

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tar.tmp-*"):  # left by a run that was killed
        stale.unlink()
    index = {"splits": {}, "left_out": [], "made_with": {"samples_per_shard": samples_per_shard,
                                                        "videos_dir": str(videos_dir), "content": "original bytes"}}
    for split, files in split_files(anno).items():
        records = read_instruct_annotations(files)
        entry = index["splits"].setdefault(split, {"shards": [], "samples": [], "total": 0})
        starts = range(0, len(records), samples_per_shard)
        for number, start in enumerate(tqdm(starts, desc=f"{split} shards", disable=not progress)):
            final = out / f"{split}-{number:06d}.tar"
            report = out / f".{final.name}.json"  # what the shard holds and left out; written first
            if not (final.is_file() and report.is_file()):
                samples, left_out = [], []
                for offset, record in enumerate(records[start:start + samples_per_shard]):
                    sample, why = _sample(f"{start + offset:09d}", record, videos_dir)
                    if sample is None:
                        left_out.append({"split": split, "video": record["video"], "why": why})
                    else:
                        samples.append(sample)
                report.write_text(json.dumps({"samples": len(samples), "left_out": left_out}))
                _write_shard(final, samples)
            done = json.loads(report.read_text())
            entry["shards"].append(final.name)
            entry["samples"].append(done["samples"])
            entry["total"] += done["samples"]
            index["left_out"] += done["left_out"]
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama export-shards", description=__doc__.splitlines()[0])
    parser.add_argument("--anno", required=True, help="annotation JSON, or a folder written by `video-llama prepare`")
    parser.add_argument("--videos-dir", required=True, help="folder the annotations' video paths are relative to")
    parser.add_argument("--out", required=True, help="folder for the shards and index.json")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.samples_per_shard < 1:
        raise UserError("--samples-per-shard must be at least 1")
    index = export_shards(args.anno, args.videos_dir, args.out, args.samples_per_shard)
    for item in index["left_out"]:
        print(f"left out ({item['split']}): {item['video']}: {item['why']}")
    for split, entry in index["splits"].items():
        print(f"{split}: {entry['total']} samples in {len(entry['shards'])} shard(s)")
    print(f"wrote {args.out}/index.json")
    return 0
