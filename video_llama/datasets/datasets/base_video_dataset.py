"""What every video dataset shares: decoding a record's clip with skip-and-count on failure.

A clip that cannot be decoded is logged with its path and replaced by the next record; a clip
shorter than ``n_frms`` is sampled with repetition and counted. When more than
``max_failed_ratio`` of the clips tried so far failed (after at least ``min_failures``), the run
stops with the list of failing files instead of training on a handful of survivors.

An index may be an int or ``(index, seed)``: the seed drives the clip's frame sampling and crop,
so augmentation is reproducible whatever worker decodes it (the sampler provides the seeds).
"""

import logging
import random
from pathlib import Path

from torch.utils.data import Dataset

from video_llama.processors.video_decoding import VideoDecodeError

logger = logging.getLogger(__name__)


class TooManyBadVideos(RuntimeError):
    pass


class AnnotationError(ValueError):
    """An annotation file that is missing or malformed; the message names it and the fix."""


def annotation_files(paths):
    """One path or several → existing Paths (build_info.anno_dir may be a file or a list)."""
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    for path in files:
        if not path.is_file():
            raise AnnotationError(f"annotation file not found: {path} (set build_info.anno_dir)")
    return files


class BaseVideoDataset(Dataset):
    min_failures = 5

    def __init__(self, records, videos_dir, vis_processor, max_failed_ratio=0.1, name="dataset"):
        self.records = records
        self.videos_dir = Path(videos_dir) if videos_dir else None
        self.vis_processor = vis_processor
        self.max_failed_ratio = max_failed_ratio
        self.name = name
        self.tried = 0
        self.failed = {}  # path → error message
        self.short = set()  # paths of clips with fewer frames than n_frms

    def __len__(self):
        return len(self.records)

    def video_path(self, record):
        path = Path(record["video"])
        return path if path.is_absolute() or self.videos_dir is None else self.videos_dir / path

    def __getitem__(self, index):
        index, seed = index if isinstance(index, tuple) else (index, None)
        rng = random.Random(seed) if seed is not None else random.Random()
        for attempt in range(len(self.records)):
            record = self.records[(index + attempt) % len(self.records)]
            self.tried += 1
            try:
                frames, clip = self.vis_processor(self.video_path(record), rng=rng)
            except VideoDecodeError as err:
                self._record_failure(record, err)
                continue
            if clip.is_short and record["video"] not in self.short:
                self.short.add(record["video"])
                logger.info("%s: %s has %d frames, fewer than %d; frames repeat", self.name,
                            record["video"], clip.num_frames, len(clip.indices))
            return self.make_sample(record, frames)
        raise TooManyBadVideos(f"{self.name}: no clip could be decoded; first failures: {list(self.failed.items())[:5]}")

    def _record_failure(self, record, err):
        self.failed[str(self.video_path(record))] = str(err)
        logger.warning("%s: skipping %s (%s)", self.name, record["video"], err)
        if len(self.failed) >= self.min_failures and len(self.failed) / self.tried > self.max_failed_ratio:
            listing = "\n  ".join(f"{p}: {e}" for p, e in self.failed.items())
            raise TooManyBadVideos(
                f"{self.name}: {len(self.failed)} of {self.tried} clips could not be decoded "
                f"(more than max_failed_ratio={self.max_failed_ratio}). Fix or remove them "
                f"(`video-llama prepare` probes and leaves out such files):\n  {listing}"
            )

    def make_sample(self, record, frames):
        raise NotImplementedError
