"""``video-llama infer --cfg-path F (--anno F|DIR | --folder D) --out F.jsonl``: answer one question
per video, without a UI.

Each line of the output: ``video``, ``question``, ``answer``, ``seconds`` (the batch's time shared
among its clips), for annotations the ``reference`` answer, and a ``warning`` (also logged) for a
clip with fewer frames than the model samples, whose answer may be unreliable; a clip that cannot
be decoded gets a line with ``error`` instead and is skipped. Greedy answers, asked exactly as the chat asks
(the timestamp sentence before the question when the model learned with it), ``--batch-size``
clips per generate call. A re-run skips the videos the output already has, so a stopped run
continues where it stopped.
"""

import argparse
import json
import logging
import time
from pathlib import Path

from video_llama.common.errors import UserError
from video_llama.conversation import GUIDE_QUESTION

logger = logging.getLogger(__name__)



def folder_videos(folder):
    """Every video file under ``folder`` (recursively), sorted."""
    from video_llama.processors.video_decoding import VIDEO_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--folder {folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def jobs_from_args(args):
    """[(video path, question, reference answer or None)] in a fixed order."""
    from video_llama.cli.export_shards import split_files
    from video_llama.datasets.datasets.base_video_dataset import video_path
    from video_llama.datasets.datasets.video_instruct_dataset import read_instruct_annotations

    if args.folder:
        return [(str(path), args.question or GUIDE_QUESTION, None) for path in folder_videos(args.folder)]
    jobs = []
    for files in split_files(args.anno).values():
        for record in read_instruct_annotations(files):
            first = record["QA"][0]
            jobs.append((str(video_path(record, args.videos_dir)), args.question or first["q"],
                         None if args.question else first["a"]))
    return jobs


def done_videos(out):
    """Videos the output already answers (or reports); a torn last line (a killed run) is cut off."""
    if not out.is_file():
        return set()
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        out.write_text("".join(lines[:-1]), encoding="utf-8")
        lines = lines[:-1]
    done = set()
    for number, line in enumerate(lines, 1):
        try:
            done.add(json.loads(line)["video"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{out}, line {number}: not a line this command writes; give another --out or remove it") from None
    return done


def answer_batch(setup, batch, settings):
    """Output lines for a batch of jobs, in its order: decoded, then answered in one generate call."""
    import torch

    from video_llama.conversation.chat import video_visual
    from video_llama.processors.video_decoding import VideoDecodeError

    lines, ready = [None] * len(batch), []
    for slot, (video, question, reference) in enumerate(batch):
        try:
            visual = video_visual(setup.vis_processor, video, setup.timestamps)
        except VideoDecodeError as err:
            logger.warning("skipping %s: %s", video, err)
            lines[slot] = {"video": video, "question": question, "error": str(err)}
            continue
        if visual.warning:
            logger.warning("%s", visual.warning)
        ready.append((slot, visual, question, reference))
    if ready:
        device = next(setup.model.parameters()).device
        frames = torch.stack([visual.frames for _, visual, _, _ in ready]).to(device)
        start = time.perf_counter()
        with torch.inference_mode():
            answers = setup.model.generate(frames, [visual.note + question for _, visual, question, _ in ready], **settings)
        seconds = round((time.perf_counter() - start) / len(ready), 3)
        for (slot, visual, question, reference), answer in zip(ready, answers):
            line = {"video": batch[slot][0], "question": question, "answer": answer, "seconds": seconds}
            if reference is not None:
                line["reference"] = reference
            if visual.warning:
                line["warning"] = visual.warning
            lines[slot] = line
    return lines


def infer(setup, jobs, out, batch_size=8, max_new_tokens=64, progress=True):
    """Answer ``jobs`` not yet in ``out``; returns (answered, failed, skipped as already done)."""
    from tqdm import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_videos(out)
    todo = [job for job in jobs if job[0] not in done]
    answered = failed = 0
    with open(out, "a", encoding="utf-8") as sink, tqdm(total=len(todo), desc="videos", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            for line in answer_batch(setup, batch, {"max_new_tokens": max_new_tokens}):
                sink.write(json.dumps(line, ensure_ascii=False) + "\n")
                failed += "error" in line
                answered += "error" not in line
            sink.flush()
            bar.update(len(batch))
    return answered, failed, len(jobs) - len(todo)


def main(argv=None):
    from video_llama.cli.demo import load_setup
    from video_llama.cli.jobs import add_config_arguments, experiment

    parser = argparse.ArgumentParser(prog="video-llama infer", description=__doc__.splitlines()[0])
    add_config_arguments(parser, "evaluation YAML (as demo.py takes)", trained=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--anno", help="annotation JSON, or a folder written by `video-llama prepare` (all its splits)")
    source.add_argument("--folder", help="a folder of videos (searched recursively)")
    parser.add_argument("--videos-dir", help="folder the annotations' video paths are relative to")
    parser.add_argument("--question", help=f"ask this of every video (default: each record's first question; "
                                           f"for --folder {GUIDE_QUESTION!r})")
    parser.add_argument("--out", required=True, help="JSONL file (appended to: a re-run skips the videos it has)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the config's run.device)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise UserError("--batch-size and --max-new-tokens must be at least 1")
    jobs = jobs_from_args(args)
    if not jobs:
        raise UserError(f"no videos in {args.folder or args.anno}")
    setup = load_setup(*experiment(args), args.device, args.plugins)
    answered, failed, skipped = infer(setup, jobs, args.out, args.batch_size, args.max_new_tokens)
    print(f"{answered} answered, {failed} could not be decoded (lines with \"error\"), {skipped} already in {args.out}")
    return 0
