"""Clips per second through the real training data path (builder, dataset, sampler, DataLoader),
8 frames at 224², for three ways to store the same clips, each against its raw decode bound (the
same frames fetched with the decoder alone, the same number of workers):

  (a) annotation + video files   (b) shards of the original bytes   (c) shards re-encoded 224²@8 fps
  (d) shards of 8 frames per clip sampled ahead of time (JPEG, 224²; `export-shards --frames 8`)

The loaders run as a GPU run's do (``run.pixels_on_device``, on by default there): workers decode
and draw the random crop, batches travel as uint8 with a PixelPlan per clip, and the crop and
normalisation happen on the device. Row (c') is (c) with that work in the workers, as CPU runs do
it; the cost of finishing on this CPU is printed below the table.

Clips: the sample clips in ../shared/media when present, otherwise generated ones (640×480,
25 fps, 6 s, one keyframe per 250 frames). Targets: (a) ≥ 0.9× its bound; (c) ≥ 10× (a).
Re-encoded clips are keyframes only, so (c) decodes just the sampled frames.

    .venv/bin/python benchmarks/loader.py [--workers 2] [--copies 12] [--repeats 3] [--media ../shared/media]
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

N_FRAMES, SIZE, BATCH = 8, 224, 8
FAST_ROWS_REPEAT = 4  # the fast rows read their shards this many times over: a few seconds, not one


def realistic_clips(media, folder):
    """[paths]: the media clips, else generated 480p clips with long GOPs."""
    clips = sorted(Path(media).glob("*.mp4")) if media and Path(media).is_dir() else []
    if clips:
        return clips
    import av

    paths = []
    for i in range(6):
        path = folder / f"generated{i}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
            stream.options = {"g": "250", "preset": "veryfast"}
            rng = np.random.default_rng(i)
            base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
            for t in range(150):
                frame = np.roll(base, 4 * t, axis=1)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths


class DecodeOnly(Dataset):
    """The raw bound: the decoder alone on each source (a path or bytes)."""

    def __init__(self, sources):
        self.sources = sources

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, i):
        from video_llama.processors.video_decoding import load_video

        return load_video(self.sources[i], N_FRAMES, SIZE, SIZE, "uniform").frames


def clips_per_second(loader, workers):
    """Steady-state clips per second: the clock starts once every worker has delivered a batch
    (worker start-up, imports and the first shard's opening are not loading throughput)."""
    warmup, clips, start = max(1, workers), 0, None
    for i, batch in enumerate(loader):
        if i == warmup - 1:
            start = time.perf_counter()
        elif i >= warmup:
            clips += len(batch["image"]) if isinstance(batch, dict) else len(batch)
    return clips / (time.perf_counter() - start)


def finishing_ms(loader, batches=4):
    """ms per clip that ``batch_to_device`` spends finishing the loader's uint8 batches on the CPU."""
    from video_llama.processors.pixel_plan import batch_to_device

    torch.set_num_threads(1)
    batches_iter = iter(loader)
    collected = [next(batches_iter) for _ in range(batches)]
    del batches_iter  # its workers stop: the timing below has the CPU to itself
    start = time.perf_counter()
    for batch in collected:
        batch_to_device(batch, "cpu")
    return (time.perf_counter() - start) * 1000 / sum(len(b["image"]) for b in collected)


def train_loader(builder_cfg, workers, clips, pixels_on_device=True):
    """The runner's training loader over one dataset, for ``clips`` clips."""
    from video_llama.common.registry import registry
    from video_llama.conversation import collate_video_samples
    from video_llama.datasets.sampling import MixedDataset, MixingBatchSampler

    dataset = registry.get_builder_class("webvid_instruct")(builder_cfg).build_datasets()["train"]
    dataset.defer_pixels = pixels_on_device
    sampler = MixingBatchSampler([len(dataset)], [1], BATCH, iters_per_epoch=clips // BATCH,
                                 streams=[hasattr(dataset, "stream_item")], num_workers=workers)
    return DataLoader(MixedDataset([dataset]), batch_sampler=sampler, num_workers=workers,
                      collate_fn=lambda b: collate_video_samples(b, pad_token_id=0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--copies", type=int, default=12, help="records per clip")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row (the median is shown)")
    parser.add_argument("--media", default=str(REPO.parent / "shared" / "media"))
    args = parser.parse_args()

    import video_llama  # noqa: F401  (registers the builders and processors)
    from video_llama.data_tools.shards import export_shards
    from video_llama.data_tools.tiny_llm import write_tiny_llm
    from video_llama.common.config import Config
    from video_llama.datasets.datasets.shard_dataset import read_shard, stored_clip

    work = Path(tempfile.mkdtemp(prefix="loader-bench-"))
    try:
        clips = realistic_clips(args.media, work)
        records = [{"video": str(c), "QA": [{"q": "What happens?", "a": "something"}]} for c in clips] * args.copies
        anno = work / "anno.json"
        anno.write_text(json.dumps(records))
        total = len(records) // BATCH * BATCH
        llm = write_tiny_llm(work / "llm")
        for reencode, frames, out in ((None, None, "shards"), (f"{SIZE}@8", None, "small"), (str(SIZE), N_FRAMES, "frames")):
            export_shards({"train": str(anno)}, "/", work / out, samples_per_shard=16, reencode=reencode,
                          workers=args.workers, progress=False, frames=frames)

        def cfg(*where):
            options = [f"model.llama_model={llm}", f"datasets.webvid_instruct.tokenizer_name={llm}",
                       f"datasets.webvid_instruct.vis_processor.train.n_frms={N_FRAMES}",
                       f"datasets.webvid_instruct.vis_processor.train.image_size={SIZE}",
                       f"datasets.webvid_instruct.vis_processor.eval.image_size={SIZE}",
                       f"model.img_size={SIZE}", *where]
            return Config.from_file(REPO / "train_configs" / "tiny_cpu_finetune.yaml", options).datasets_cfg.webvid_instruct

        def stored(folder):
            return [stored_clip(s, folder)[1] for i in range(len(list((work / folder).glob("*.tar"))))
                    for s in read_shard(str(work / folder / f"train-{i:06d}.tar"))]

        cases = [
            ("(a) annotation + files", cfg(f"datasets.webvid_instruct.build_info.anno_dir={anno}",
                                           "datasets.webvid_instruct.build_info.videos_dir=null"),
             [r["video"] for r in records], True),
            ("(b) shards, original bytes", cfg("datasets.webvid_instruct.build_info.anno_dir=null",
                                               f"datasets.webvid_instruct.build_info.shards={work / 'shards'}"),
             [Path(r["video"]).read_bytes() for r in records], True),
            (f"(c) shards, re-encoded {SIZE}²@8fps", cfg("datasets.webvid_instruct.build_info.anno_dir=null",
                                                         f"datasets.webvid_instruct.build_info.shards={work / 'small'}"),
             stored("small"), True),
            ("(c') re-encoded, finished in the workers", cfg("datasets.webvid_instruct.build_info.anno_dir=null",
                                                             f"datasets.webvid_instruct.build_info.shards={work / 'small'}"),
             stored("small"), False),
            (f"(d) shards, {N_FRAMES} frames as JPEG", cfg("datasets.webvid_instruct.build_info.anno_dir=null",
                                                          f"datasets.webvid_instruct.build_info.shards={work / 'frames'}"),
             stored("frames"), True),
        ]
        measured, finish_ms = {name: ([], []) for name, *_ in cases}, None
        for _ in range(args.repeats):  # rows interleaved: a slow spell of the machine hits them all
            for name, builder_cfg, raw, on_device in cases:
                clips_timed = total if name.startswith(("(a)", "(b)")) else FAST_ROWS_REPEAT * total  # shards: endless
                loader = train_loader(builder_cfg, args.workers, clips_timed, on_device)
                measured[name][0].append(clips_per_second(loader, args.workers))
                if finish_ms is None:
                    finish_ms = finishing_ms(loader)
                measured[name][1].append(clips_per_second(DataLoader(
                    DecodeOnly((raw * FAST_ROWS_REPEAT)[:clips_timed]), batch_size=BATCH, num_workers=args.workers),
                    args.workers))
        rows = [(name, float(np.median(p)), float(np.median(b))) for name, (p, b) in measured.items()]
        torch.set_num_threads(1)
        source = f"{len(clips)} clips from {args.media}" if clips[0].parent != work else f"{len(clips)} generated clips"
        print(f"{source}, {total} clips per run ({FAST_ROWS_REPEAT * total} for the fast rows; timed after each worker's "
              f"first batch), {args.workers} workers, batch {BATCH}, {N_FRAMES} frames at {SIZE}²\n")
        print("| data | clips/s | raw decode bound | pipeline / bound | vs (a) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, pipeline, bound in rows:
            print(f"| {name} | {pipeline:.1f} | {bound:.1f} | {pipeline / bound:.2f} | {pipeline / rows[0][1]:.1f}× |")
        print(f"\nFinishing uint8 batches (random resized crop + normalisation) on this CPU, one thread: "
              f"{finish_ms:.1f} ms per clip in the training process.")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
