"""What every video dataset shares: decoding a record's clip with skip-and-count on failure.

A clip that cannot be decoded is logged with its path and, in training (``substitute_unreadable``,
set for the train split), replaced by the next record; in evaluation it is returned as
``{"unreadable": path, "error": ...}`` so that it is left out and reported, never counted twice. A clip
shorter than ``n_frms`` is sampled with repetition and counted. A clip whose decoding takes longer
than ``decode_timeout_s`` (a stalled network mount, a pathological stream) is abandoned and
skipped like an unreadable one, so no file can hang a run. The run stops, listing the
failing files, only when the failures show that much more than ``max_failed_ratio`` of the data
is unreadable (:class:`FailureBudget`); a few bad clips in a large dataset never stop it.

Frames come from the processor's LAVIS-style ``processor(path)``; frame count, fps and sampled
indices from its ``clip_info(path)`` when it has one. Augmentation draws from the global
generators, which the training sampler seeds per sample (see ``datasets/sampling.py``). A processor
that cuts windows (``window_s``) cuts them at random points in training and, in the other splits
(``fixed_windows``), at points drawn from the sample's index, so every evaluation sees the same.
"""

import json
import logging
import math
import random
from pathlib import Path

from torch.utils.data import Dataset

from video_llama.common.errors import UserError
from video_llama.common.run_folder import append_bad_clip, read_new_bad_clips
from video_llama.datasets.datasets.shard_dataset import stored_clip
from video_llama.processors.video_decoding import VideoDecodeError, with_deadline

logger = logging.getLogger(__name__)


class TooManyBadVideos(UserError, RuntimeError):
    pass


class AnnotationError(UserError, ValueError):
    """An annotation file that is missing or malformed; the message names it and the fix."""


def annotation_files(paths):
    """One path or several → existing Paths (build_info.anno_dir may be a file or a list)."""
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    for path in files:
        if not path.is_file():
            raise AnnotationError(f"annotation file not found: {path} (set build_info.anno_dir)")
    return files


def load_json(path):
    """An annotation file's JSON; AnnotationError naming the file when it is not UTF-8 JSON."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path} is not UTF-8 text ({err}); save it as UTF-8 JSON") from err
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path} is not valid JSON: {err}") from err


QUARANTINE = "quarantine.txt"  # what `video-llama check-data` writes beside its report


def read_quarantine(path, key="build_info.quarantine"):
    """The ``video`` paths a quarantine file (one a line, ``#`` comments) or a check-data report lists."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{key}: {path} does not exist; give the {QUARANTINE} (or report) that "
                              "`video-llama check-data` wrote, or set it to null")
    if path.suffix == ".json":
        return set(json.loads(path.read_text())["quarantine"])
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def video_path(record, videos_dir):
    """Where a record's clip is: its ``video`` path, relative to ``videos_dir`` unless absolute."""
    path = Path(record["video"])
    return path if path.is_absolute() or videos_dir is None else Path(videos_dir) / path


class FailureBudget:
    """Counts decoding failures and says when they are too many to be bad luck.

    Two tests, either of which stops the run. Early, in each data-loader worker: after at least
    ``min_failures`` failures, the lower end of a Wilson score interval (z = 3.3, one-sided 99.95%)
    on the failure rate is above ``max_ratio``: with 5% unreadable clips and the default 0.1 that
    practically never happens, with half the clips unreadable it happens within about 20 tries.
    For the whole run, once a ``ledger`` is shared (the run folder's ``bad_clips.jsonl``, which
    every worker of every rank appends to): more distinct clips of the dataset failed than
    ``max_ratio`` of its ``size``, so "at most 10% bad" means 10% of the data for the run, however
    many workers and ranks found them, and resumed runs count what they found before.
    """

    Z = 3.3

    def __init__(self, max_ratio, min_failures=5, size=0, dataset="dataset"):
        self.max_ratio, self.min_failures, self.size, self.dataset = max_ratio, min_failures, size, dataset
        self.tried, self.failed = 0, {}
        self.ledger = None  # Path of the run's shared list, or None (counts stay in this process)
        self._in_ledger, self._ledger_read = {}, 0  # its entries of this dataset read so far, and up to which byte

    def record(self, where, error):
        """Count one failure; with a ledger, list it there too."""
        self.failed[where] = error
        if self.ledger is not None:
            append_bad_clip(self.ledger, self.dataset, where, error)

    def run_failures(self):
        """{clip: error} of this dataset's failures in the whole run (the ledger's), else this process's."""
        if self.ledger is None:
            return dict(self.failed)
        entries, self._ledger_read = read_new_bad_clips(self.ledger, self._ledger_read)  # each line read once
        self._in_ledger.update((e["clip"], e["error"]) for e in entries if e["dataset"] == self.dataset)
        return dict(self._in_ledger)

    def run_limit(self):
        """The most distinct bad clips the run accepts: ``max_ratio`` of the data, at least ``min_failures``."""
        return max(self.min_failures, int(self.max_ratio * self.size))

    def lower_bound(self):
        n, z = self.tried, self.Z
        if n == 0:
            return 0.0
        p = len(self.failed) / n
        centre = p + z * z / (2 * n)
        spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre - spread) / (1 + z * z / n)

    def exceeded(self):
        """None, or why the run should stop."""
        if len(self.failed) >= self.min_failures and self.lower_bound() > self.max_ratio:
            return (f"{len(self.failed)} of {self.tried} clips tried could not be decoded, clearly more "
                    f"than max_failed_ratio={self.max_ratio}")
        if self.ledger is not None and self.size:
            run_failed = len(self.run_failures())
            if run_failed > self.run_limit():
                return (f"{run_failed} distinct clips of its {self.size} could not be decoded in this run (every "
                        f"worker and rank, listed in {self.ledger}), more than max_failed_ratio={self.max_ratio} "
                        f"allows ({self.run_limit()})")
        return None


class BaseVideoDataset(Dataset):
    min_failures = 5
    substitute_unreadable = True  # False: an unreadable clip is returned as a marker (evaluation)
    defer_pixels = False  # True: uint8 frames + PixelPlan, finished on the training device (run.pixels_on_device)
    fixed_windows = False  # True: windows (vis_processor window_s) cut where the sample's index says (evaluation)
    sound_processor = None  # set (evaluation, dataset key ``sound``): samples carry their sound, None without
    decode_timeout_s = 10.0  # a clip whose decoding takes longer is abandoned and skipped (None: no deadline)
    feature_cache = None  # a FeatureCache: samples carry the frozen encoders' frame_features instead of pixels

    def __init__(self, records, videos_dir, vis_processor, max_failed_ratio=0.1, name="dataset"):
        self.records = records
        self.videos_dir = Path(videos_dir) if videos_dir else None
        self.vis_processor = vis_processor
        self.max_failed_ratio = max_failed_ratio
        self.name = name
        self.budget = FailureBudget(max_failed_ratio, self.min_failures, len(records), name)
        self.short = set()  # paths of clips with fewer frames than n_frms

    @property
    def failed(self):
        """{path: error} of the clips that could not be decoded (in this process)."""
        return self.budget.failed

    def __len__(self):
        return len(self.records)

    def video_path(self, record):
        return video_path(record, self.videos_dir)

    def __getitem__(self, index):
        rng = self.window_rng(index)
        for attempt in range(len(self.records)):
            record = self.records[(index + attempt) % len(self.records)]
            sample = self.decode_record(record, rng)
            if "unreadable" not in sample or not self.substitute_unreadable:
                return sample
        raise TooManyBadVideos(f"{self.name}: no clip could be decoded; first failures: {list(self.failed.items())[:5]}")

    @property
    def cuts_windows(self):
        """Whether the processor cuts windows of ``window_s`` seconds rather than taking whole clips."""
        return bool(getattr(getattr(self.vis_processor, "config", None), "window_s", 0))

    def window_rng(self, index):
        """What draws where windows are cut: the ``random`` module (seeded per sample in training),
        a generator of ``index`` with :attr:`fixed_windows`, or None when the processor takes
        whole clips (its own sampling then decides)."""
        if not self.cuts_windows:
            return None
        return random.Random(index) if self.fixed_windows else random

    def decode_record(self, record, rng=None):
        """The sample of one record (``rng``: see :meth:`window_rng`)."""
        return self.decode(record, self.video_path(record), rng=rng)

    def decode(self, record, source, where=None, rng=None):
        """The sample of ``record`` with its clip decoded from ``source`` (a path, or the video's
        bytes with ``where`` naming them), or ``{"unreadable": ..., "error": ...}``, counted.
        ``rng``: where a window is cut (None: the processor's own choice)."""
        self.budget.tried += 1
        if self.feature_cache is not None:
            skipped = self.feature_cache.skipped(record)
            if skipped:  # unreadable when the cache was written: counted and skipped like a clip now
                self._record_failure(record, f"not in the feature cache: {skipped}", record["video"])
                return {"unreadable": record["video"], "error": skipped}
            features, info = self.feature_cache.read(record)
            sample = self.make_sample(record, features, info)
            sample["frame_features"] = sample.pop("image")
            return sample
        try:
            frames, info, plan, sound = with_deadline(self.read_clip, source, self.decode_timeout_s, rng)
        except VideoDecodeError as err:
            self._record_failure(record, err, where or str(source))
            return {"unreadable": record["video"], "error": str(err)}
        if info is not None and info.is_short and record["video"] not in self.short:
            self.short.add(record["video"])
            logger.info("%s: %s has %d frames, fewer than %d; frames repeat", self.name,
                        record["video"], info.num_frames, len(info.indices))
        sample = self.make_sample(record, frames, info)
        if plan is not None:  # uint8 frames, finished on the training device (batch_to_device)
            sample["pixel_plan"] = plan
        if self.sound_processor is not None:
            sample["sound"] = sound
        return sample

    def read_clip(self, source, rng=None):
        """:meth:`read_visual`'s (frames, info, plan), and the sound those frames show (with a
        ``sound_processor``): one job under the decoding deadline, which a stalled file holds up
        for the sound as much as for the frames."""
        frames, info, plan = self.read_visual(source, rng)
        return frames, info, plan, self.read_sound(source, info) if self.sound_processor is not None else None

    def read_sound(self, source, info):
        """The filterbanks of the sound the sample's frames show: the window's stretch of it (the
        ``window_s`` seconds up to its last frame, as the mode selector hears a window), or the
        whole clip's; None (the reason logged) when it has none."""
        span = None
        if self.cuts_windows and info is not None and info.fps:
            end = (info.indices[-1] + 1) / info.fps
            span = (end - self.vis_processor.config.window_s, end)
        sound = self.sound_processor(source, span)  # bytes, a file object or a path (as_source)
        if sound is None:
            logger.info("%s: %s", self.name, self.sound_processor.last_reason)
        return sound

    def log_failures_to(self, ledger):
        """Count bad clips for the whole run in ``ledger`` (the run folder's ``bad_clips``), shared
        by every worker and rank (see :class:`FailureBudget`)."""
        self.budget.ledger = Path(ledger)

    def unusable(self, where, why, log=True):
        """A stored sample that cannot be used (no image, its shard broken before it): counted like
        an unreadable clip, and returned as the unreadable marker."""
        self.budget.tried += 1
        self._record_failure({"video": where}, why, where, log)
        return {"unreadable": where, "error": why}

    def _record_failure(self, record, err, where, log=True):
        self.budget.record(where, str(err))
        if log:
            logger.warning("%s: skipping %s (%s)", self.name, record["video"], err)
        reason = self.budget.exceeded()
        if reason:
            failed = self.budget.run_failures()
            listing = "\n  ".join(f"{p}: {e}" for p, e in list(failed.items())[:50])
            more = f"\n  ... and {len(failed) - 50} more" if len(failed) > 50 else ""
            raise TooManyBadVideos(
                f"{self.name}: {reason}. Fix or remove them (`video-llama check-data` writes a quarantine "
                f"list for build_info.quarantine):\n  {listing}{more}"
            )

    def read_visual(self, source, rng=None):
        """(frames, ClipInfo or None, PixelPlan or None) of ``source``; raises VideoDecodeError.
        The frames are the processor's float output, or with :attr:`defer_pixels` and a processor
        that can split its work (``prepare``), uint8 frames and the plan that finishes them. With
        ``rng`` the window is cut at a random point drawn from it."""
        plan = None
        processor = self.vis_processor
        if rng is not None:
            clip = processor.load(source, processor.frame_sampling("random"), rng)
            frames, plan = processor.finish(clip.frames, self.defer_pixels)
        elif self.defer_pixels and hasattr(self.vis_processor, "prepare"):
            frames, plan = self.vis_processor.prepare(source)
        else:
            frames = self.vis_processor(source)
        info = self.vis_processor.clip_info(source) if hasattr(self.vis_processor, "clip_info") else None
        return frames, info, plan

    def from_stored(self, stored, where):
        """The sample of one stored WebDataset sample (``where`` names it): its ``.json`` record and
        its video bytes or frames, as :meth:`decode` would give for the file."""
        meta, source = stored_clip(stored, where)
        record = self.prepare_record(meta)
        if record is None:  # the text no longer fits max_seq_len with an answer
            return {"unreadable": where, "error": "text does not fit max_seq_len with the placeholder and an answer"}
        return self.decode(record, source, where=where)

    def prepare_record(self, record):
        """``record`` ready for :meth:`make_sample` (an instruction record gets its tokens), or None
        when it cannot be used. Shards call it per sample; a dataset of files, once per record."""
        return record

    def make_sample(self, record, frames, info):
        """The sample dict of ``record`` with its processed ``frames`` (``info``: a ClipInfo or None)."""
        raise NotImplementedError
