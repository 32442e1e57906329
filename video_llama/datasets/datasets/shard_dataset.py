"""Samples stored in WebDataset tars (``video-llama export-shards``), decoded from memory by the
same dataset code, processors and backends as files.

Training reads a shard set as endless streams, one per *consumer* (a DataLoader worker of a rank):

* the shards are split among the consumers pass by pass (each pass a seeded permutation of the
  shard list, consumer ``c`` taking its own share); with more consumers than shards each consumer
  resamples shards with replacement instead, so no rank ever waits for data;
* within a shard the samples are shuffled through a bounded buffer (``shuffle_buffer`` samples of
  encoded bytes, seeded per shard visit);
* a sample is addressed by ``(consumer, position)``: which process reads it, and when, does not
  change what it is, so a resumed run reads the same samples as the run that was never stopped.
  The process that reads a consumer's stream keeps the open shard and continues from it; any other
  position is reached by counting samples per shard (``index.json``, or the tar headers of local
  files) and reading from the start of one shard.

Evaluation and tests read the samples in order (``dataset[i]``: shard by shard, tar order).

A shard that breaks while it is read (cut short, corrupt, gone from a network store) is named once
in the log and its remaining samples are unreadable ones, counted and skipped like a broken clip:
positions keep their meaning, so the stream stays resumable, and a run stops only when the bad-clip
budget says the data is mostly gone.
"""

import bisect
import functools
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
from torch.utils.data import Dataset

from video_llama.common.errors import UserError
from video_llama.common.utils import is_local_spec
from video_llama.processors.video_decoding import VIDEO_EXTENSIONS, KeyframeVideo, StoredFrames

logger = logging.getLogger(__name__)

LOST = "__lost__"  # a stored sample that could not be read because its shard broke before it (its reason)

VIDEO_MEMBERS = sorted(ext.lstrip(".") for ext in VIDEO_EXTENSIONS)  # a sample's video: <key>.mp4, ...
FRAME_MEMBER = re.compile(r"\d{3}\.jpg")  # or frames sampled ahead of time: <key>.000.jpg, <key>.001.jpg, ...


def frame_member(number):
    return f"{number:03d}.jpg"


class ShardError(UserError, RuntimeError):
    """A shard that cannot be read; the message names it."""


def shard_splits(spec):
    """``build_info.shards`` as {split: [shard urls]}: an `export-shards` folder gives every split of
    its ``index.json``; a brace pattern, URL or list is the train split; a mapping names splits."""
    from braceexpand import braceexpand

    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {split: shard_splits(urls)["train"] for split, urls in spec.items()}
    if isinstance(spec, str) and is_local_spec(spec) and Path(spec).is_dir():
        index_file = Path(spec) / "index.json"
        if not index_file.is_file():
            raise ShardError(f"build_info.shards: the folder {spec} has no index.json; name the tars, e.g. "
                             f"\"{spec}/train-{{000000..000009}}.tar\", or export them with `video-llama export-shards`")
        splits = json.loads(index_file.read_text())["splits"]
        return {split: [str(Path(spec) / name) for name in entry["shards"]] for split, entry in splits.items()}
    specs = [spec] if isinstance(spec, str) else list(spec)
    return {"train": [url for one in specs for url in braceexpand(one)]}


def _count_tar(path):
    """Samples in a local tar, from its headers alone (a sample: the members sharing a key)."""
    import tarfile

    keys, last = 0, None
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile():
                    folder, _, base = member.name.rpartition("/")
                    key = (folder, base.split(".", 1)[0])
                    keys, last = keys + (key != last), key
    except (OSError, tarfile.TarError) as err:
        raise ShardError(f"shard {path} cannot be read ({err}); re-export it") from err
    return keys


def shard_counts(urls, index=None):
    """Samples per shard: from ``index`` (an ``index.json``; default: the one beside local shards),
    else counted from local tars; remote shards without an index are an error naming the key."""
    if index is None and urls and is_local_spec(urls[0]) and (Path(urls[0]).parent / "index.json").is_file():
        index = Path(urls[0]).parent / "index.json"
    known = {}
    if index is not None:
        try:
            for entry in json.loads(Path(index).read_text())["splits"].values():
                known.update(zip(entry["shards"], entry["samples"]))
        except (OSError, ValueError, KeyError) as err:
            raise ShardError(f"build_info.shard_index: {index} is not an export-shards index.json ({err})") from err
    counts = []
    for url in urls:
        name = next((part for part in reversed(url.split()) if part.endswith(".tar")), url).rsplit("/", 1)[-1]
        if name in known:
            counts.append(known[name])
        elif is_local_spec(url):
            if not Path(url).is_file():
                raise ShardError(f"shard not found: {url} (build_info.shards)")
            counts.append(_count_tar(url))
        else:
            raise ShardError(f"{url}: how many samples it holds is unknown; set build_info.shard_index to an "
                             "index.json listing it (`video-llama export-shards` writes one)")
    return counts


def read_shard(url):
    """The samples of one tar (a path, URL or ``pipe:`` spec) as webdataset dicts, in tar order."""
    import webdataset as wds

    pipeline = wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples())
    try:
        yield from pipeline
    except Exception as err:  # a truncated or foreign tar: name it, the traceback names nothing useful
        raise ShardError(f"shard {url} cannot be read ({type(err).__name__}: {err}); re-export it "
                         "(`video-llama export-shards` rewrites unfinished shards)") from err


def stored_clip(stored, where):
    """(record, what the processors decode) of a stored sample: the video's bytes, or its frames."""
    member = next((ext for ext in VIDEO_MEMBERS if ext in stored), None)
    frames = sorted(name for name in stored if FRAME_MEMBER.fullmatch(name))
    if "json" not in stored or (member is None and not frames):
        raise ShardError(f"{where}: a sample needs a .json and a video member ({'/'.join(VIDEO_MEMBERS)}) "
                         f"or frames (000.jpg, ...); it has {sorted(k for k in stored if not k.startswith('__'))}")
    meta = json.loads(stored["json"])
    if member is not None:
        return meta, KeyframeVideo(stored[member]) if meta.get("keyframes_only") else stored[member]
    try:
        return meta, StoredFrames([stored[name] for name in frames], meta["frame_indices"], meta["num_frames"], meta["fps"])
    except KeyError as err:
        raise ShardError(f"{where}: stored frames need frame_indices, num_frames and fps in its .json "
                         f"(missing {err}); re-export with `video-llama export-shards --frames N`") from None


def buffer_shuffled(samples, size, rng):
    """``samples`` in an order shuffled through a buffer of ``size`` (webdataset's shuffle)."""
    buffer = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = int(rng.integers(size))
        buffer[i], sample = sample, buffer[i]
        yield sample
    for i in rng.permutation(len(buffer)):
        yield buffer[i]


class ShardDataset(Dataset):
    """One split's shards, read through ``reader`` (a file dataset of the same builder, with no
    records: its ``from_stored`` turns a stored sample into exactly what the file would give)."""

    def __init__(self, urls, counts, reader, shuffle_buffer=16, name="shards"):
        if len(urls) != len(counts):
            raise ValueError(f"{len(urls)} shard(s) but {len(counts)} sample count(s)")
        if sum(counts) == 0:
            raise ShardError(f"{name}: the shards {urls[:3]}... hold no sample")
        self.urls, self.counts, self.reader = list(urls), list(counts), reader
        self.shuffle_buffer, self.name = shuffle_buffer, name
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).tolist()
        self.substitute_unreadable = True
        reader.budget.size = len(self)  # the reader has no records: the run-wide limit counts the shards'
        self._open = {}  # StreamId (or "ordered") → the _Cursor this process reads it with

    def __len__(self):
        return self.starts[-1]

    @property
    def defer_pixels(self):  # the reader decodes, so it is the one that defers the pixel work
        return self.reader.defer_pixels

    @defer_pixels.setter
    def defer_pixels(self, value):
        self.reader.defer_pixels = value

    def log_failures_to(self, ledger):
        self.reader.log_failures_to(ledger)

    @property
    def anno_files(self):
        """Where the records came from, as a file dataset's ``anno_files``: the shards' folder
        (``export-shards`` copies the annotations' ``labels.json`` into it)."""
        return [Path(self.urls[0]).parent] if is_local_spec(self.urls[0]) else []

    @property
    def records(self):
        """Every stored record (reads the shards through once)."""
        return [json.loads(stored["json"]) for shard in range(len(self.urls)) for stored in self._read(shard)
                if LOST not in stored]

    # ------------------------------------------------------------------ what a sample is
    def _sample(self, shard, stored):
        """A stored sample of shard number ``shard`` → the dataset's sample, or the unreadable marker."""
        where = f"{self.urls[shard]}:{stored.get('__key__')}"
        if LOST in stored:
            return self.reader.unusable(where, stored[LOST], log=False)  # the shard's one warning named it
        return self.reader.from_stored(stored, where)

    def _read(self, shard):
        """The stored samples of one shard, as many as its count says: when the shard breaks (or
        ends early), the rest are LOST samples, after one warning that names it."""
        url, count, read, samples = self.urls[shard], self.counts[shard], 0, read_shard(self.urls[shard])
        while True:
            try:
                stored = next(samples, None)
            except ShardError as err:  # read_shard names the shard and the fix
                why = str(err)
                break
            if stored is None:
                if read == count:
                    return
                why = (f"shard {url} ends after {read} of its {count} samples; re-export it (`video-llama "
                       "export-shards` rewrites unfinished shards)")
                break
            read += 1
            if read > count:
                raise ShardError(f"shard {url} holds more samples than the {count} its index says; re-export the "
                                 "shards or fix build_info.shard_index")
            yield stored
        logger.warning("%s: %s. Its %d remaining samples are skipped", self.name, why, count - read)
        for lost in range(read, count):
            yield {"__key__": f"lost sample {lost}", LOST: why}

    # ------------------------------------------------------------------ in order (evaluation)
    def __getitem__(self, index):
        shard = bisect.bisect_right(self.starts, index) - 1
        cursor = self._open.get("ordered")  # reads forward: a rank's or worker's share costs one pass
        if cursor is None or cursor.shard != shard or cursor.position > index:
            cursor = self._open["ordered"] = _Cursor(None, self.starts[shard], 0, shard, self._read(shard))
        while cursor.position <= index:
            stored = next(cursor.samples)
            cursor.position += 1
        return self._sample(shard, stored)

    # ------------------------------------------------------------------ streams (training)
    def visit_shard(self, stream, visit):
        """The shard that the ``visit``-th shard visit of ``stream`` (a StreamId) reads."""
        n, seed = len(self.urls), stream.seed
        if n < stream.consumers:  # resampled with replacement
            return int(np.random.default_rng([seed, 1, stream.consumer, visit]).integers(n))
        share = n // stream.consumers
        pass_id, offset = divmod(visit, share)
        return int(_pass_permutation(n, seed, pass_id)[stream.consumer * share + offset])

    def _visit(self, stream, visit):
        shard = self.visit_shard(stream, visit)
        rng = np.random.default_rng([stream.seed, 2, stream.consumer, visit])
        return shard, buffer_shuffled(self._read(shard), self.shuffle_buffer, rng)

    def _seek(self, stream, position):
        visit, first = 0, 0
        while position >= first + (count := self.counts[self.visit_shard(stream, visit)]):
            first, visit = first + count, visit + 1
        cursor = _Cursor(stream, first, visit, *self._visit(stream, visit))
        while cursor.position < position:
            self._next_stored(cursor)
        return cursor

    def _next_stored(self, cursor):
        """(shard, stored sample) at the cursor's position; the cursor moves on."""
        if cursor.ahead:
            shard, stored = cursor.ahead.pop(0)
        else:
            stored = next(cursor.samples, None)
            while stored is None:  # this visit is used up: the next one
                cursor.visit += 1
                cursor.shard, cursor.samples = self._visit(cursor.stream, cursor.visit)
                stored = next(cursor.samples, None)
            shard = cursor.shard
        cursor.position += 1
        return shard, stored

    def stream_item(self, stream, position):
        """The sample at ``position`` of ``stream`` (a StreamId). In training an unreadable clip is
        replaced by the stream's next one, which keeps its own place too."""
        cursor = self._open.get(stream)
        if cursor is None or cursor.position != position:
            cursor = self._open[stream] = self._seek(stream, position)
        sample = self._sample(*self._next_stored(cursor))
        lookahead = []
        while "unreadable" in sample and self.substitute_unreadable and len(lookahead) < len(self):
            lookahead.append(self._next_stored(cursor))
            sample = self._sample(*lookahead[-1])
        cursor.ahead[:0], cursor.position = lookahead, cursor.position - len(lookahead)
        return sample


@functools.lru_cache(maxsize=8)
def _pass_permutation(n, seed, pass_id):
    """The order of the ``n`` shards in one pass (kept: a seek walks a pass visit by visit)."""
    return np.random.default_rng([seed, 0, pass_id]).permutation(n)


class StreamId(NamedTuple):
    """One consumer's endless stream over a shard set: ``consumer`` of ``consumers`` (ranks ×
    DataLoader workers), under the run's ``seed``."""

    consumer: int
    consumers: int
    seed: int


class _Cursor:
    """Where a reader is in a stream: the next position, the shard visit, and samples read ahead."""

    def __init__(self, stream, position, visit, shard, samples):
        self.stream, self.position, self.visit, self.shard, self.samples = stream, position, visit, shard, samples
        self.ahead = []
