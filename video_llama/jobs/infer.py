"""Answer one question about many videos, in batches, resuming where an earlier run stopped."""

import json
import logging
import time
from pathlib import Path

import torch

from video_llama.common.errors import UserError
from video_llama.conversation.chat import ChatError, hear, video_visual
from video_llama.conversation.collate import sound_groups
from video_llama.processors.video_decoding import VideoDecodeError

logger = logging.getLogger(__name__)


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


def answer_batch(setup, batch, settings, sounds=None):
    """Output lines for a batch of jobs, in its order: decoded, then answered in one generate call
    (two: the clips heard, and those not). ``sounds``: {video: sound file to hear instead of its own}."""
    lines, ready = [None] * len(batch), []
    for slot, (video, question, reference) in enumerate(batch):
        try:
            visual = hear(video_visual(setup.vis_processor, video, setup.timestamps), setup.sound_processor,
                          (sounds or {}).get(video))
        except (VideoDecodeError, ChatError) as err:
            logger.warning("skipping %s: %s", video, err)
            lines[slot] = {"video": video, "question": question, "error": str(err)}
            continue
        if visual.warning:
            logger.warning("%s", visual.warning)
        ready.append((slot, visual, question, reference))
    for rows, sound in sound_groups([visual.sound for _, visual, _, _ in ready]):  # one generate call each
        answer_group(setup, [ready[row] for row in rows], sound, settings, lines, batch)
    return lines


def answer_group(setup, group, sound, settings, lines, batch):
    """Answer clips that are all heard (their stacked ``sound``), or all not, in one generate call;
    their lines into ``lines``."""
    device = next(setup.model.parameters()).device
    frames = torch.stack([visual.frames for _, visual, _, _ in group]).to(device)
    heard = {} if sound is None else {"sound": sound.to(device)}
    start = time.perf_counter()
    with torch.inference_mode():
        answers = setup.model.generate(frames, [visual.note + question for _, visual, question, _ in group],
                                       **heard, **settings)
    seconds = round((time.perf_counter() - start) / len(group), 3)
    for (slot, visual, question, reference), answer in zip(group, answers):
        line = {"video": batch[slot][0], "question": question, "answer": answer, "seconds": seconds}
        if reference is not None:
            line["reference"] = reference
        if visual.hearing:
            line["sound"] = visual.sound is not None
        if visual.warning:
            line["warning"] = visual.warning
        lines[slot] = line


def infer(setup, jobs, out, batch_size=8, max_new_tokens=64, progress=True, sounds=None):
    """Answer ``jobs`` not yet in ``out`` (``sounds``: as :func:`answer_batch` takes them); returns
    (answered, failed, skipped as already done)."""
    from tqdm import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_videos(out)
    todo = [job for job in jobs if job[0] not in done]
    answered = failed = 0
    with open(out, "a", encoding="utf-8") as sink, tqdm(total=len(todo), desc="videos", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            for line in answer_batch(setup, batch, {"max_new_tokens": max_new_tokens}, sounds):
                sink.write(json.dumps(line, ensure_ascii=False) + "\n")
                failed += "error" in line
                answered += "error" not in line
            sink.flush()
            bar.update(len(batch))
    return answered, failed, len(jobs) - len(todo)
