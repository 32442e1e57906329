"""Video instruction data: ``[{"video": rel/path, "QA": [{"q": ..., "a": ...}, ...]}]``.

Every record is tokenised once, up front: records whose text cannot fit ``max_seq_len`` without
cutting the video placeholder or losing every answer token are reported and left out before
training starts. Answers are used as written (a label such as ``greet_mode`` stays as it is).
With ``straddle`` some samples are windows over the cut from one clip to a clip of another answer,
or windows in which a motion stops or starts (see ``straddle.py``).
"""

import logging
from collections import defaultdict

import torch

from video_llama.conversation import (
    IMAGE_PATCH_TOKEN,
    VIDEO_END,
    VIDEO_START,
    conversation_ids,
    timestamp_sentence,
    truncate,
    video_placeholder,
)
from video_llama.datasets.datasets.base_video_dataset import AnnotationError, BaseVideoDataset, annotation_files, load_json
from video_llama.datasets.datasets.straddle import Straddle, cut_window, still_indices
from video_llama.processors.video_decoding import VideoDecodeError, probe_video, with_deadline
from video_llama.processors.video_processors import ClipInfo

logger = logging.getLogger(__name__)


VISUAL_MARK = "<image>"  # a first question may say where the video or image goes (LLaVA's convention)


def read_instruct_annotations(paths, key="video"):
    """Records from one or more annotation JSON files; errors name the file, entry and fix.
    ``key``: the entries' path field (``image`` for image data); records keep it as ``video``."""
    records = []
    for path in annotation_files(paths):
        entries = load_json(path)
        if not isinstance(entries, list):
            raise AnnotationError(f"{path} must hold a JSON list of {{'video': ..., 'QA': [...]}} entries")
        for i, entry in enumerate(entries):
            qa = entry.get("QA") if isinstance(entry, dict) else None
            ok = isinstance(entry, dict) and isinstance(entry.get(key), str) and isinstance(qa, list) and qa
            ok = ok and all(isinstance(t, dict) and isinstance(t.get("q"), str) and isinstance(t.get("a"), str) for t in qa)
            if not ok:
                raise AnnotationError(
                    f"{path}, entry {i}: expected {{'{key}': 'path', 'QA': [{{'q': str, 'a': str}}, ...]}}, got {entry!r:.200}"
                )
            records.append({"video": entry[key], "QA": qa})
    return records


REST_WORDS = ("rest", "still", "idle", "static", "none", "nothing", "pause", "stop")  # a rest class's likely names


class VideoInstructDataset(BaseVideoDataset):
    placeholder_tags = (VIDEO_START, VIDEO_END)

    def __init__(self, records, videos_dir, vis_processor, tokenizer, template, num_video_query_token=32,
                 max_seq_len=512, max_failed_ratio=0.1, name="webvid_instruct", anno_files=(), timestamps=False,
                 straddle=None):
        self.tokenizer = tokenizer
        self.straddle = straddle or Straddle()
        self.timestamps, self.max_seq_len = timestamps, max_seq_len
        self.anno_files = list(anno_files)
        self.template = template
        self.num_video_query_token = num_video_query_token
        self.placeholder_id = tokenizer.convert_tokens_to_ids(IMAGE_PATCH_TOKEN)
        kept, dropped = [], []
        for record in records:
            prepared = self.prepare_record(record)
            if prepared:
                kept.append(prepared)
            else:
                dropped.append(record)
        if dropped:
            logger.warning("%s: left out %d record(s) whose text does not fit max_seq_len=%d with the "
                           "placeholder and an answer, e.g. %s", name, len(dropped), max_seq_len,
                           [r["video"] for r in dropped[:5]])
        self.dropped = dropped
        super().__init__(kept, videos_dir, vis_processor, max_failed_ratio, name)
        self.by_answer = defaultdict(list)  # first answer → records: where a straddling window's partner comes from
        for record in kept:
            self.by_answer[record["QA"][0]["a"]].append(record)
        self.check_rest_answer()

    def prepare_record(self, record):
        tokens = self.tokenize(record["QA"], self.max_seq_len)
        return {**record, **tokens} if tokens else None

    def tokenize(self, qa, max_seq_len, note=""):
        """ids and labels of a record; ``note`` (the timestamp sentence) goes between the video and
        the first question, as ``<Video>...</Video> {note}{question}``; where the first question
        says ``<image>`` (LLaVA's data) the placeholder takes its place, as the original put it."""
        placeholder = video_placeholder(self.num_video_query_token, *self.placeholder_tags)
        first = qa[0]["q"]
        if VISUAL_MARK in first:
            first = first.replace(VISUAL_MARK, f"{placeholder} {note}" if note else placeholder, 1)
        else:
            first = f"{placeholder} {note}{first}"
        turns = [(first if i == 0 else t["q"], t["a"]) for i, t in enumerate(qa)]
        input_ids, labels = conversation_ids(self.tokenizer, self.template, turns)
        result = truncate(input_ids, labels, max_seq_len, self.placeholder_id, self.num_video_query_token)
        return None if result is None else {"input_ids": result[0], "labels": result[1]}

    def decode_record(self, record, rng=None):
        """A window of ``record``'s clip or, for ``straddle.ratio`` of the samples, a window over
        the cut between it and a clip of another answer (of its own for ``straddle.same_answer`` of
        those), in a random order; for ``straddle.stop_ratio`` of them (records of a motion), a
        window of its clip in which the motion stops or starts."""
        if rng is None or not self.straddle.active:
            return super().decode_record(record, rng)
        draw, answer = rng.random(), record["QA"][0]["a"]
        if draw < self.straddle.ratio:
            same = self.straddle.same_answer and rng.random() < self.straddle.same_answer and len(self.by_answer[answer]) > 1
            others = [answer] if same else sorted(a for a in self.by_answer if a != answer)
            if others:
                partner = rng.choice([r for r in self.by_answer[rng.choice(others)] if r is not record])
                return self.decode_straddle(*((record, partner) if rng.random() < 0.5 else (partner, record)), rng)
        elif draw < self.straddle.ratio + self.straddle.stop_ratio and answer != self.straddle.rest_answer:
            return self.decode_stop(record, rng)
        return super().decode_record(record, rng)

    def check_rest_answer(self):
        rest = self.straddle.rest_answer
        if self.straddle.stop_ratio and rest not in self.by_answer:
            key = f"datasets.{self.name.split('/')[0]}"
            restful = [a for a in sorted(self.by_answer) if any(w in a.lower() for w in REST_WORDS)]
            guess = f" ({restful[0]!r} reads like one: --options {key}.rest_answer={restful[0]!r})" if restful else ""
            raise AnnotationError(f"{self.name}: rest_answer={rest!r} is no answer of {self.anno_files}; set "
                                  f"{key}.rest_answer to your class of a hand at rest, one of "
                                  f"{sorted(self.by_answer)[:20]}{guess}, or {key}.stop_ratio=0 when your data has none")

    def decode_straddle(self, first, second, rng):
        """The sample of a window over the cut from ``first``'s clip to ``second``'s, answered as
        ``straddle`` says; unreadable (counted, as :meth:`decode`) when either clip is."""
        paths = [self.video_path(first), self.video_path(second)]

        def frames(cut, frame_counts):
            return list(zip(paths, (cut.first, cut.second)))

        return self.decode_window((first, second), paths, frames, (first, second), f"{first['video']} -> {second['video']}", rng)

    def decode_stop(self, record, rng):
        """The sample of a window of ``record``'s clip in which the hand holds still after the cut
        (or before it), answered with a record of ``straddle.rest_answer`` while the stillness holds
        the window's end as ``straddle`` says."""
        path, stops = self.video_path(record), rng.random() < 0.5
        rest = rng.choice(self.by_answer[self.straddle.rest_answer])

        def frames(cut, frame_counts):
            return [(path, still_indices(cut, frame_counts[0], stops))]

        where = f"{record['video']} {'stops' if stops else 'starts'}"
        return self.decode_window((record, record), [path, path], frames, (record, rest) if stops else (rest, record), where, rng)

    def decode_window(self, records, paths, frames, answers, where, rng):
        """A window over a cut between ``records``' clips at ``paths``: ``frames(cut, frame counts)``
        says which of their frames it shows; ``answers`` are the records whose tokens answer it
        before the cut and after it (whichever holds the window's end as ``straddle`` says)."""
        processor, cfg = self.vis_processor, self.vis_processor.config

        def read(paths):
            probed = {p: probe_video(p, cfg.backend) for p in paths}
            (first_frames, first_fps), (second_frames, second_fps) = (probed[p] for p in paths)
            cut = cut_window(cfg.window_s, cfg.n_frms, first_frames, first_fps, second_frames, second_fps, rng)
            return cut, cut and [processor.load(p, lambda *_, chosen=chosen: chosen).frames
                                 for p, chosen in frames(cut, (first_frames, second_frames))]

        try:
            cut, clips = with_deadline(read, paths, self.decode_timeout_s)
        except VideoDecodeError as err:
            self.budget.tried += 1
            failed = next((r for r, p in zip(records, paths) if str(p) in str(err)), records[0])
            self._record_failure(failed, err, str(self.video_path(failed)))
            return {"unreadable": failed["video"], "error": str(err)}
        if cut is None:  # one frame, or a window too short for two: nothing to cut
            return self.decode(records[0], paths[0], rng=rng)
        self.budget.tried += 1
        pixels, plan = processor.finish(torch.cat(clips, dim=1), self.defer_pixels)
        sample = self.make_sample(answers[self.straddle.second_wins(cut.second_share)], pixels,
                                  ClipInfo(len(cut.positions), cut.fps, cut.positions, window=True))
        sample["video"] = f"{where} ({cut.second_share:.2f} after the cut)"
        if plan is not None:
            sample["pixel_plan"] = plan
        return sample

    def make_sample(self, record, frames, info):
        """The record's tokens; with ``timestamps`` re-tokenised with the sentence for this clip (a
        record that would then no longer fit keeps its tokens without it). ``question`` is the
        first question as the model is asked it, sentence included, for evaluation."""
        note = timestamp_sentence(info.shown_indices, info.fps) if self.timestamps and info is not None else ""
        tokens = self.tokenize(record["QA"], self.max_seq_len, note) if note else None
        if tokens is None:
            note, tokens = "", record
        return {
            "image": frames,
            "input_ids": torch.tensor(tokens["input_ids"]),
            "labels": torch.tensor(tokens["labels"]),
            "video": record["video"],
            "question": note + record["QA"][0]["q"],
            "answer": record["QA"][0]["a"],
        }
