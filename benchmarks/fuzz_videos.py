"""Damaged videos through what reads them: training's decoding, `check-data` and `select-mode`'s
reader. The goal (issue 32): no hang, no traceback, every damaged file named.

A fuzz set is made from four small clips of the containers the decoders read (H.264 in mp4 and mkv,
MPEG-4 in avi, VP8 in webm): truncations, flipped and zeroed bytes, swapped chunks, wrong
extensions, files that are no video at all, empty files, concatenations, extreme and tiny frame
counts and sizes, audio-only files, FIFOs, folders, dangling and looping links. Each reader runs in
a child process that reports file by file, so that a file that crashes the process (a segfault in
a decoder) or blocks it is found and named instead of stopping the benchmark; the child then
restarts after that file. Outcomes per file: ``ok`` (decoded, or judged fine), ``named`` (refused
or skipped with a message that names the file), ``unnamed`` (refused without naming it),
``traceback`` (an exception the product does not turn into a message), ``crash``, ``hang``.

Last, a decoder that blocks forever (a FIFO let through to decord, as a file on a stalled mount
blocks): how long training's decoding takes to abandon and name it, against ``decode_timeout_s``.

    .venv/bin/python benchmarks/fuzz_videos.py --out /tmp/fuzz [--count 200] [--seed 0] [--hang-s 60]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

READERS = ("training", "check_data", "select_mode")
OUTCOMES = ("ok", "named", "unnamed", "traceback", "crash", "hang")
# files per kind in a set of 200 (scaled for other counts; every kind at least once)
KINDS = {"truncated": 40, "truncated_header": 12, "flipped": 40, "flipped_header": 24, "zeroed": 20,
         "swapped_chunks": 12, "wrong_extension": 12, "not_video": 12, "empty": 4, "concatenated": 8,
         "extreme_size": 2, "few_frames": 2, "audio_only": 3, "special": 9}


# ---------------------------------------------------------------------- the fuzz set
def write_sources(folder):
    """Four good clips (48 frames of moving gradients at 8 fps), one per container."""
    from video_llama.data_tools.video_writer import write_video

    t = np.arange(48)[:, None, None, None]
    y, x = np.mgrid[0:48, 0:64]
    frames = ((x[None, :, :, None] * 3 + y[None, :, :, None] * 2 + t * 5 + np.array([0, 60, 120])) % 256).astype(np.uint8)
    return [write_video(folder / f"source{ext}", frames) for ext in (".mp4", ".avi", ".mkv", ".webm")]


def audio_only(path):
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def make_fuzz_set(out, count=200, seed=0):
    """Write the damaged files into ``out/files``; returns [{"file", "kind", "how"}] (also ``out/fuzz.json``)."""
    from video_llama.data_tools.video_writer import write_video

    rng = np.random.default_rng(seed)
    files, made = out / "files", []
    files.mkdir(parents=True, exist_ok=True)
    sources = write_sources(out / "sources")
    data = [p.read_bytes() for p in sources]

    def add(name, kind, how, content=None):
        path = files / name
        if content is not None:
            path.write_bytes(content)
        made.append({"file": name, "kind": kind, "how": how})

    per_kind = {kind: max(1, round(n * count / 200)) for kind, n in KINDS.items()}
    for i in range(per_kind["truncated"]):
        s = i % len(data)
        cut = int(len(data[s]) * rng.uniform(0.02, 0.98))
        add(f"truncated_{i}{sources[s].suffix}", "truncated", f"{sources[s].name} cut at byte {cut}", data[s][:cut])
    for i in range(per_kind["truncated_header"]):
        s, cut = i % len(data), int(rng.integers(1, 200))
        add(f"truncated_header_{i}{sources[s].suffix}", "truncated_header", f"first {cut} bytes", data[s][:cut])
    for kind, span in (("flipped", None), ("flipped_header", 512)):
        for i in range(per_kind[kind]):
            s = i % len(data)
            buf = bytearray(data[s])
            n = int(rng.choice([1, 4, 16, 64, 256]))
            at = rng.integers(0, span or len(buf), n)
            for a in at:
                buf[a] ^= int(rng.integers(1, 256))
            add(f"{kind}_{i}{sources[s].suffix}", kind, f"{n} bytes flipped", bytes(buf))
    for i in range(per_kind["zeroed"]):
        s = i % len(data)
        buf = bytearray(data[s])
        length = int(len(buf) * rng.uniform(0.01, 0.1))
        start = int(rng.integers(0, len(buf) - length))
        buf[start:start + length] = bytes(length)
        add(f"zeroed_{i}{sources[s].suffix}", "zeroed", f"{length} bytes zeroed at {start}", bytes(buf))
    for i in range(per_kind["swapped_chunks"]):
        s = i % len(data)
        buf = bytearray(data[s])
        size = int(len(buf) * rng.uniform(0.02, 0.2))
        a, b = sorted(rng.integers(0, len(buf) - size, 2))
        buf[a:a + size], buf[b:b + size] = buf[b:b + size], buf[a:a + size]
        add(f"swapped_{i}{sources[s].suffix}", "swapped_chunks", f"{size} bytes at {a} and {b} swapped", bytes(buf))
    extensions = [".mp4", ".avi", ".mkv", ".webm", ".mov"]
    for i in range(per_kind["wrong_extension"]):
        s = i % len(data)
        ext = [e for e in extensions if e != sources[s].suffix][i % 4]
        add(f"wrong_extension_{i}{ext}", "wrong_extension", f"{sources[s].name} named {ext}", data[s])
    junk = [b"hello, this is a text file\n" * 20, b"\x89PNG\r\n\x1a\n" + bytes(100), b"\xff\xd8\xff\xe0" + bytes(500),
            b"\x1f\x8b\x08\x00" + bytes(300), b"<html><body>Not Found</body></html>", None]
    for i in range(per_kind["not_video"]):
        content = junk[i % len(junk)] or rng.integers(0, 256, int(rng.integers(10, 50_000)), dtype=np.uint8).tobytes()
        add(f"not_video_{i}.mp4", "not_video", "text, image or random bytes", content)
    for i in range(per_kind["empty"]):
        add(f"empty_{i}{extensions[i % 4]}", "empty", "0 bytes", b"")
    for i in range(per_kind["concatenated"]):
        a, b = i % len(data), (i + 1) % len(data)
        if i % 2:
            content = data[a][: len(data[a]) // 2] + data[b][len(data[b]) // 2:]
            how = f"first half of {sources[a].name}, second of {sources[b].name}"
        else:
            content, how = data[a] + data[b], f"{sources[a].name} then {sources[b].name}"
        add(f"concatenated_{i}{sources[a].suffix}", "concatenated", how, content)
    for i in range(per_kind["extreme_size"]):
        width = 8200 if i % 2 == 0 else 16
        height = 16 if i % 2 == 0 else 8200
        write_video(files / f"extreme_size_{i}.mp4", np.full((4, height, width, 3), 90, np.uint8))
        add(f"extreme_size_{i}.mp4", "extreme_size", f"{width}x{height} frames")
    for i in range(per_kind["few_frames"]):
        write_video(files / f"few_frames_{i}.mp4", np.full((i + 1, 48, 64, 3), 90, np.uint8))
        add(f"few_frames_{i}.mp4", "few_frames", f"{i + 1} frame(s)")
    for i in range(per_kind["audio_only"]):
        audio_only(files / f"audio_only_{i}.mp4")
        add(f"audio_only_{i}.mp4", "audio_only", "AAC, no video stream")
    specials = ["fifo", "folder", "dangling_link", "link_loop"]
    for i in range(per_kind["special"]):
        what, name = specials[i % 4], f"special_{i}.mp4"
        path = files / name
        if what == "fifo":
            os.mkfifo(path)
        elif what == "folder":
            path.mkdir()
        elif what == "dangling_link":
            path.symlink_to(files / "nowhere.mp4")
        else:
            path.symlink_to(path)
        add(name, "special", what)
    (out / "fuzz.json").write_text(json.dumps(made, indent=1))
    return made


# ---------------------------------------------------------------------- the readers (in a child)
def train_dataset(out, videos, *options):
    """The stream recipe's train dataset of ``videos`` (names in ``out/files``), nothing mixed across clips."""
    from video_llama.common.config import Config
    from video_llama.common.registry import registry

    anno = out / f"anno_{len(videos)}.json"
    anno.write_text(json.dumps([{"video": v, "QA": [{"q": "What is shown?", "a": "rest"}]} for v in videos]))
    cfg = Config.from_file(REPO / "train_configs/quickstart_stream_tiny.yaml", [
        f"model.llama_model={out / 'tiny-llm'}", f"datasets.webvid_instruct.tokenizer_name={out / 'tiny-llm'}",
        f"datasets.webvid_instruct.build_info.anno_dir={anno}", f"datasets.webvid_instruct.build_info.videos_dir={out / 'files'}",
        "datasets.webvid_instruct.straddle_ratio=0", "datasets.webvid_instruct.stop_ratio=0",
        "datasets.webvid_instruct.rest_answer=null", "run.valid_splits=[]", *options])
    return registry.get_builder_class("webvid_instruct")(cfg.datasets_cfg.webvid_instruct).build_datasets()["train"]


def training_reader(out):
    """Training's decoding: every clip of the set tried by the train dataset (no bad-clip limit)."""
    made = json.loads((out / "fuzz.json").read_text())
    dataset = train_dataset(out, [m["file"] for m in made], "datasets.webvid_instruct.max_failed_ratio=1.0")
    by_video = {record["video"]: record for record in dataset.records}

    def read(name):
        sample = dataset.decode_record(by_video[name], dataset.window_rng(0))
        return ("named" if name in sample["error"] else "unnamed", sample["error"]) if "unreadable" in sample else ("ok", "")
    return read


def check_data_reader(out):
    """What each of check-data's worker processes runs on a clip."""
    from video_llama.data_tools.check_data import _check_one

    def read(name):
        _, problem, detail, _, _ = _check_one((name, out / "files" / name, 8, "decord", 10.0))
        # check-data reports a problem beside the clip's name (its report's "video" key)
        return ("named", f"{problem}: {detail}") if problem else ("ok", detail)
    return read


def select_mode_reader(out):
    """`select-mode --video`'s reading: the check before the model loads, then every frame."""
    from video_llama.common.errors import UserError
    from video_llama.processors import frame_stream

    def read(name):
        path = out / "files" / name
        try:
            frame_stream.check_source(str(path))
            frames = sum(1 for _ in frame_stream.stream_frames(str(path), 64))
        except UserError as err:  # what select-mode prints as "error: ..." (exit 2) or keeps as a broken-off source
            return ("named" if name in str(err) else "unnamed", str(err))
        return "ok", f"{frames} frames"
    return read


def child(reader_name, out, start):
    """Read the fuzz set from ``start`` on, one JSON line per file begun and per file done."""
    import logging

    logging.disable(logging.WARNING)  # the skips are what is counted; their log lines would flood stderr
    made = json.loads((out / "fuzz.json").read_text())
    read = {"training": training_reader, "check_data": check_data_reader, "select_mode": select_mode_reader}[reader_name](out)
    with open(out / f"{reader_name}.progress.jsonl", "a") as progress:
        for i in range(start, len(made)):
            progress.write(json.dumps({"i": i, "begun": True}) + "\n")
            progress.flush()
            began = time.monotonic()
            try:
                outcome, detail = read(made[i]["file"])
            except Exception as err:  # noqa: BLE001  what the product let through unhandled
                outcome, detail = "traceback", f"{type(err).__name__}: {err}"
            progress.write(json.dumps({"i": i, "outcome": outcome, "detail": detail[:300],
                                       "seconds": round(time.monotonic() - began, 3)}) + "\n")
            progress.flush()


# ---------------------------------------------------------------------- the harness
def run_isolated(reader_name, out, n, hang_s):
    """{i: result} of ``reader_name`` over the set; a crash or a hang is charged to the file being
    read, and a new child goes on after it."""
    progress = out / f"{reader_name}.progress.jsonl"
    progress.unlink(missing_ok=True)
    results, start = {}, 0
    while start < n:
        with open(out / f"{reader_name}.stderr.log", "a") as log:
            proc = subprocess.Popen([sys.executable, __file__, "--child", reader_name, "--out", str(out), "--start",
                                     str(start)], stdout=log, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "1"})
        current, seen, changed, begun = start, 0, time.monotonic(), False
        while True:
            code = proc.poll()
            lines = progress.read_text().splitlines() if progress.exists() else []
            for line in lines[seen:]:
                entry = json.loads(line)
                if entry.get("begun"):
                    current, begun = entry["i"], True
                else:
                    results[entry["i"]] = entry
            if len(lines) > seen:
                seen, changed = len(lines), time.monotonic()
            if code is not None:
                break
            if time.monotonic() - changed > hang_s:
                proc.kill()
                proc.wait()
                results[current] = {"i": current, "outcome": "hang", "detail": f"no progress for {hang_s} s"}
                break
            time.sleep(0.1)
        if not begun and proc.returncode:  # it failed before any file: the set-up's fault, not a file's
            raise SystemExit(f"the {reader_name} reader could not start; see {out / f'{reader_name}.stderr.log'}")
        if current not in results:
            results[current] = {"i": current, "outcome": "crash", "detail": f"the reader process ended with {proc.returncode}"}
        start = max(results) + 1
    return results


def whole_check_data(out, timeout_s):
    """`video-llama check-data --folder` over the whole set, as a user runs it: (exit code, its summary line)."""
    cmd = [sys.executable, "-m", "video_llama.cli.main", "check-data", "--folder", str(out / "files"), "--out",
           str(out / "check_data_report.json")]
    try:
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"no end within {timeout_s} s"
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("checked", "Traceback"))]
    return result.returncode, "; ".join(lines)


def blocked_decoder(out, timeout_s=2.0):
    """(seconds, message): how long training's decoding takes to abandon and name a clip whose
    decoder blocks forever."""
    from video_llama.processors import video_decoding

    os.mkfifo(out / "files" / "blocked.mp4")
    dataset = train_dataset(out, ["blocked.mp4"], f"datasets.webvid_instruct.decode_timeout_s={timeout_s}")
    original, video_decoding.file_problem = video_decoding.file_problem, lambda path: None  # let the FIFO through
    try:
        began = time.monotonic()
        sample = dataset.decode_record(dataset.records[0], dataset.window_rng(0))
        return time.monotonic() - began, sample.get("error", "decoded")
    finally:
        video_decoding.file_problem = original


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="a folder for the fuzz set and the report (made afresh)")
    parser.add_argument("--count", type=int, default=200, help="damaged files (about)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-s", type=float, default=60.0, help="no progress for this long is a hang")
    parser.add_argument("--readers", nargs="+", default=list(READERS), choices=READERS)
    parser.add_argument("--child", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.child:
        return child(args.child, out, args.start)

    import shutil

    from video_llama.data_tools.tiny_llm import write_tiny_llm

    shutil.rmtree(out, ignore_errors=True)
    made = make_fuzz_set(out, args.count, args.seed)
    write_tiny_llm(out / "tiny-llm")
    print(f"{len(made)} damaged files in {out / 'files'}: " + ", ".join(f"{k} {v}" for k, v in Counter(m['kind'] for m in made).items()))
    report = {"files": made, "readers": {}}
    print(f"\n| reader | files | {' | '.join(OUTCOMES)} | slowest file s |\n| --- | ---: |{' ---: |' * (len(OUTCOMES) + 1)}")
    for reader in args.readers:
        results = run_isolated(reader, out, len(made), args.hang_s)
        counts = Counter(r["outcome"] for r in results.values())
        slowest = max((r.get("seconds", 0) for r in results.values()), default=0)
        report["readers"][reader] = [{**made[i], **results[i]} for i in sorted(results)]
        print(f"| {reader} | {len(results)} | {' | '.join(str(counts.get(o, 0)) for o in OUTCOMES)} | {slowest:.2f} |")
    code, summary = whole_check_data(out, timeout_s=600)
    report["check_data_cli"] = {"exit": code, "summary": summary}
    seconds, message = blocked_decoder(out)
    report["blocked_decoder"] = {"seconds": round(seconds, 2), "decode_timeout_s": 2.0, "message": message}
    print(f"\n`video-llama check-data --folder` over the set: exit {code}; {summary}")
    print(f"a decoder blocked forever (decode_timeout_s 2): named after {seconds:.2f} s: {message}")
    for reader, rows in report["readers"].items():
        for row in rows:
            if row["outcome"] not in ("ok", "named"):
                print(f"  {reader}: {row['outcome']}: {row['file']} ({row['kind']}: {row['how']}): {row['detail']}")
    (out / "fuzz_report.json").write_text(json.dumps(report, indent=1))
    print(f"\nreport: {out / 'fuzz_report.json'}")
    bad = sum(row["outcome"] not in ("ok", "named") for rows in report["readers"].values() for row in rows)
    return 1 if bad or code != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
