"""Video decoding behind one small interface: decord by default, PyAV as the other backend.

Both backends resize in the decoder (cheaper than decoding full frames and resizing after) and
read from a path or from bytes in memory (WebDataset shards); frames stored ahead of time as
JPEGs (:class:`StoredFrames`) and clips of keyframes only (:class:`KeyframeVideo`) are read the
same way. Frame indices are chosen by a sampling strategy before decoding, so only the needed
frames are converted to RGB.
"""

import contextlib
import io
import os
import random
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from video_llama.common.errors import UserError


VIDEO_EXTENSIONS = {".avi", ".mp4", ".mkv", ".webm", ".mov"}  # the containers the backends read


class VideoDecodeError(UserError, RuntimeError):
    """A clip that cannot be opened or decoded; the message names it."""


@dataclass
class DecodedClip:
    frames: torch.Tensor  # uint8 (C, T, H, W): a view of the decoder's (T, H, W, C) array
    indices: list  # the frame indices that were sampled (may repeat for short clips)
    num_frames: int  # frames in the source clip
    fps: float  # the container's average frame rate (0.0 when it states none)

    @property
    def is_short(self):
        return self.num_frames < len(self.indices)


SAMPLINGS = ("uniform", "headtail")


def check_sampling(sampling, what="frame sampling"):
    if sampling not in SAMPLINGS:
        raise ValueError(f"{what}: {sampling!r} is not a frame sampling; use {' or '.join(SAMPLINGS)}")


def sample_indices(num_frames, n_frms, sampling="uniform", rng=None):
    """Indices of ``n_frms`` frames out of ``num_frames``.

    ``uniform`` takes evenly spaced frames (as the original Video-LLaMA); ``headtail`` draws half
    of the frames at random from each half of the clip (training augmentation). A clip shorter
    than ``n_frms`` is sampled uniformly with repetition so the model still sees ``n_frms`` frames.
    """
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if sampling == "headtail" and num_frames // 2 >= (n_frms + 1) // 2 and n_frms > 1:
        rng = rng or random  # the global generator, which the dataset seeds per sample
        half = num_frames // 2
        head = rng.sample(range(half), n_frms // 2)
        tail = rng.sample(range(half, num_frames), n_frms - n_frms // 2)
        return sorted(head) + sorted(tail)
    check_sampling(sampling)
    step = num_frames / n_frms
    return [min(int(i * step), num_frames - 1) for i in range(n_frms)]


def choose_frames(sampling, num_frames, n_frms, fps=0.0, rng=None):
    """The frame indices a ``sampling`` picks from a clip of ``num_frames`` frames at ``fps``: a
    sampling name (see :func:`sample_indices`), or a callable ``(num_frames, fps, rng) -> indices``
    such as :class:`WindowSampling`, for choices that need the clip's length in seconds."""
    if callable(sampling):
        return [min(max(int(i), 0), num_frames - 1) for i in sampling(num_frames, fps, rng)]
    return sample_indices(num_frames, n_frms, sampling, rng)


UNKNOWN_FPS = 25.0  # what a clip whose container states no frame rate is taken to run at


def window_frames(times, t_end, window_s, n_frms):
    """Indices into ``times`` (ascending seconds) of ``n_frms`` frames spread over the window of
    ``window_s`` seconds that ends at ``t_end``: the frames of the window, sampled as ``uniform``
    samples a clip.

    The one definition of a window: the mode selector cuts a stream this way, and a processor with
    ``window_s`` cuts a clip this way, so a model trained on windows sees what it will be shown.
    """
    times = np.asarray(times, dtype=np.float64)
    first = int(np.searchsorted(times, t_end - window_s - 1e-6))
    end = max(int(np.searchsorted(times, t_end + 1e-6)), first + 1)
    return [first + i for i in sample_indices(end - first, n_frms, "uniform")]


@dataclass(frozen=True)
class WindowSampling:
    """``n_frms`` frames of a window of ``seconds`` cut from a clip as :func:`window_frames` cuts a
    stream. ``place``: ``random`` ends the window at a frame drawn from ``rng`` (the ``random``
    module when None) among those that leave a whole window before them; ``middle`` centres it. A
    clip shorter than the window is taken whole."""

    seconds: float
    n_frms: int
    place: str = "random"

    def __call__(self, num_frames, fps, rng=None):
        times = np.arange(num_frames) / (fps or UNKNOWN_FPS)
        earliest = min(int(np.searchsorted(times, self.seconds - 1e-6)), num_frames - 1)  # first full window's end
        if self.place == "middle":
            end = (earliest + num_frames - 1) // 2
        else:
            end = (rng or random).randint(earliest, num_frames - 1)
        return window_frames(times, times[end], self.seconds, self.n_frms)


def as_source(source):
    """decord and PyAV accept a path or a file-like object rewound to 0 (not raw bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if isinstance(source, io.IOBase):
        source.seek(0)
        return source
    return str(source)


def no_video_stream(source):
    """The one message for a file without a video stream (an audio file, say), wherever it is read."""
    return VideoDecodeError(f"{_name(source)} holds no video stream (an audio-only file?); give a video file "
                            "(mp4, avi, mkv, webm, ...)")


def lacks_video_stream(source):
    """Whether PyAV opens ``source`` and finds no video stream in it: decord then fails with its own
    internal check (``st_nb >= 0``), which says nothing to a user."""
    import av

    try:
        with av.open(as_source(source)) as container:
            return not container.streams.video
    except Exception:  # not a container PyAV reads either: decord's own message stands
        return False


class _NativeStderr:
    text = ""


@contextlib.contextmanager
def native_stderr():
    """Collect what C libraries (decord's C++ logger, FFmpeg) write to file descriptor 2 inside
    the block, where Python's own logging cannot reach it. On success it is written back to stderr
    unchanged; on failure the caller folds it into one readable error instead of a second, raw
    "ERROR opening" line beside ours."""
    captured = _NativeStderr()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield captured
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")
            if captured.text and not failed:
                sys.stderr.write(captured.text)


def native_error_reason(err, captured):
    """decord's own message, plus the last thing FFmpeg said about the file (its real cause)."""
    lines = [line.split("ERROR opening: ", 1)[-1].strip() for line in captured.text.splitlines() if line.strip()]
    detail = f" ({lines[-1]})" if lines else ""
    return f"{str(err).splitlines()[0] if str(err) else type(err).__name__}{detail}"


def _name(source):
    return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__} in memory>"


class DecordBackend:
    name = "decord"

    def read(self, source, n_frms, height, width, sampling, rng=None):
        import decord

        try:
            with native_stderr() as captured:
                reader = decord.VideoReader(as_source(source), height=height or -1, width=width or -1, num_threads=1)
                num_frames, fps = len(reader), float(reader.get_avg_fps() or 0.0)
                indices = choose_frames(sampling, num_frames, n_frms, fps, rng)
                frames = reader.get_batch(indices).asnumpy()
        except Exception as err:  # decord raises its own DECORDError and RuntimeErrors
            if lacks_video_stream(source):
                raise no_video_stream(source) from err
            raise VideoDecodeError(f"cannot decode {_name(source)} with decord: {native_error_reason(err, captured)}") from err
        return DecodedClip(torch.from_numpy(frames).permute(3, 0, 1, 2), indices, num_frames, fps)

    def probe(self, source):
        """(frame count, fps) without decoding a frame."""
        import decord

        try:
            with native_stderr() as captured:
                reader = decord.VideoReader(as_source(source), num_threads=1)
                return len(reader), float(reader.get_avg_fps() or 0.0)
        except Exception as err:
            if lacks_video_stream(source):
                raise no_video_stream(source) from err
            raise VideoDecodeError(f"cannot open {_name(source)} with decord: {native_error_reason(err, captured)}") from err


class PyAVBackend:
    """Reads a clip's packets (its compressed bytes) into memory first: a clip of keyframes only
    then decodes just the sampled frames; any other decodes every frame in order."""

    name = "pyav"

    def read(self, source, n_frms, height, width, sampling, rng=None):
        import av

        try:
            with av.open(as_source(source)) as container:
                if not container.streams.video:
                    raise no_video_stream(source)
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                fps = float(stream.average_rate or 0.0)
                packets = [packet for packet in container.demux(stream) if packet.size]  # a clip's compressed bytes
                if packets and all(packet.is_keyframe for packet in packets):  # intra-coded: any frame on its own
                    num_frames = len(packets)
                    indices = choose_frames(sampling, num_frames, n_frms, fps, rng)
                    frames, decoded = self._decode_keyframes(stream, packets, indices, height, width), num_frames
                else:
                    num_frames = stream.frames or len(packets)
                    indices = choose_frames(sampling, max(num_frames, 1), n_frms, fps, rng)
                    frames, decoded = self._decode(stream, packets, indices, height, width)
                    if decoded and decoded != num_frames:  # the container's count was wrong: sample what it has
                        num_frames, indices = decoded, choose_frames(sampling, decoded, n_frms, fps, rng)
                        if not set(indices) <= frames.keys():
                            frames, _ = self._decode(stream, packets, indices, height, width)
        except VideoDecodeError:
            raise
        except Exception as err:  # av.error.*
            raise VideoDecodeError(f"cannot decode {_name(source)} with PyAV: {err}") from err
        if not decoded:
            raise VideoDecodeError(f"cannot decode {_name(source)} with PyAV: no video frames")
        clip = np.stack([frames[i] for i in indices])
        return DecodedClip(torch.from_numpy(clip).permute(3, 0, 1, 2), indices, num_frames, fps)

    def probe(self, source):
        """(frame count, fps) from the container (mkv/webm: packets counted), no frame decoded."""
        import av

        try:
            with av.open(as_source(source)) as container:
                if not container.streams.video:
                    raise no_video_stream(source)
                stream = container.streams.video[0]
                frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
                return frames, float(stream.average_rate or 0.0)
        except VideoDecodeError:
            raise
        except Exception as err:
            raise VideoDecodeError(f"cannot open {_name(source)} with PyAV: {err}") from err

    def _decode(self, stream, packets, indices, height, width):
        """({index: RGB frame} for the wanted indices, frames decoded). Every frame is decoded (a
        frame needs the ones before it), but only the sampled ones are converted to RGB, which is
        most of PyAV's cost on small clips."""
        codec = stream.codec_context
        codec.flush_buffers()  # a second pass starts clean
        wanted, frames, index = set(indices), {}, 0
        for packet in [*packets, None]:  # None drains the frames the decoder still holds
            for frame in codec.decode(packet):
                if index in wanted:
                    frames[index] = self._to_rgb(frame, height, width)
                index += 1
        return frames, index

    def _decode_keyframes(self, stream, packets, indices, height, width):
        """{index: RGB frame}, decoding only the sampled packets: every packet is a keyframe; frame
        ``index`` is the packet of that rank in presentation time (a stable sort keeps the stored
        order of packets without a timestamp)."""
        codec = stream.codec_context
        codec.thread_count = 1  # one small frame at a time: threads only add start-up cost
        packets = sorted(packets, key=lambda packet: -1 if packet.pts is None else packet.pts)
        frames = {}
        for index in sorted(set(indices)):
            decoded = codec.decode(packets[index])
            if not decoded:  # a decoder that holds frames back: drain it, then start afresh
                decoded = codec.decode(None)
                codec.flush_buffers()
            frames[index] = self._to_rgb(decoded[0], height, width)
        return frames

    @staticmethod
    def _to_rgb(frame, height, width):
        """RGB, resized when asked; one scaling thread and a cached scaler (PyAV's defaults start
        threads and a new scaler for each frame: 0.55 against 0.12 ms for a 224² frame)."""
        return _reformatter().reformat(frame, width=width or None, height=height or None, format="rgb24",
                                       threads=1).to_ndarray()


_local = threading.local()


def _reformatter():
    """A PyAV scaler per thread (a scaler keeps state between frames, so threads never share one)."""
    if not hasattr(_local, "reformatter"):
        from av.video.reformatter import VideoReformatter

        _local.reformatter = VideoReformatter()
    return _local.reformatter


@dataclass
class StoredFrames:
    """A clip kept as frames sampled ahead of time (``export-shards --frames``): JPEG bytes of
    ``len(images)`` frames taken at ``indices`` of a source clip of ``num_frames`` frames at ``fps``.
    Decoding samples among the stored frames (so headtail still varies) and reports the source's
    indices, frame count and rate, so frame times read as they would from the video."""

    images: list  # JPEG bytes, in time order
    indices: list  # the source frame of each image
    num_frames: int
    fps: float

    def read(self, n_frms, height, width, sampling, rng=None):
        from PIL import Image, UnidentifiedImageError

        if callable(sampling):
            raise UserError("windows in seconds (vis_processor window_s) need the videos, not frames sampled ahead of "
                            "time: export the shards without --frames (or with --reencode)")
        chosen = sample_indices(len(self.images), n_frms, sampling, rng)
        try:
            frames = np.stack([np.asarray(Image.open(io.BytesIO(self.images[j])).convert("RGB")) for j in chosen])
        except (OSError, UnidentifiedImageError) as err:
            raise VideoDecodeError(f"cannot decode a stored frame: {err}") from err
        frames = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, C, H, W)
        if height and width and tuple(frames.shape[-2:]) != (height, width):
            frames = torch.nn.functional.interpolate(frames, size=(height, width), mode="bilinear", antialias=True)
        return DecodedClip(frames.permute(1, 0, 2, 3).contiguous(), [self.indices[j] for j in chosen], self.num_frames, self.fps)

    def probe(self):
        return self.num_frames, self.fps


@dataclass
class KeyframeVideo:
    """The bytes of a clip whose every frame is a keyframe (``export-shards --reencode`` writes
    them). Read through PyAV's packets whatever the configured backend: only the sampled frames are
    decoded, where decord seeks once per frame (8 frames of a 224² clip: 4.1 against 13.4 ms). At the
    stored size both give the same pixels (tested); resized, PyAV's scaler differs slightly."""

    data: bytes

    def read(self, n_frms, height, width, sampling, rng=None):
        return PyAVBackend().read(self.data, n_frms, height, width, sampling, rng)

    def probe(self):
        return PyAVBackend().probe(self.data)


def encode_frames(frames, quality=90):
    """uint8 frames (C, T, H, W) → [JPEG bytes], one per frame (what StoredFrames reads)."""
    from PIL import Image

    images = []
    for frame in frames.permute(1, 2, 3, 0).numpy():  # (H, W, C) each
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        images.append(buffer.getvalue())
    return images


BACKENDS = {"decord": DecordBackend, "pyav": PyAVBackend}
SELF_READING = (StoredFrames, KeyframeVideo)  # sources that choose how they are read


def get_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown video backend {name!r}; use one of {sorted(BACKENDS)}")
    return BACKENDS[name]()


def file_problem(path):
    """Why the file at ``path`` cannot be a clip before any decoder opens it, or None: missing, not a
    regular file (a FIFO or a device would block a decoder until a writer comes: never opened), empty."""
    try:
        info = Path(path).stat()
    except FileNotFoundError:
        return f"video file not found: {path}"
    except OSError as err:  # a path through a file, a symlink loop, a permission: named like a missing file
        return f"cannot read {path}: {err}"
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a folder" if stat.S_ISDIR(info.st_mode) else "a device or socket"
        return f"{path} is {kind}, not a regular file: a decoder would block on it, so it is not opened"
    if info.st_size == 0:
        return f"video file is empty (0 bytes): {path}"
    return None


def _check_exists(source):
    problem = file_problem(source) if isinstance(source, (str, Path)) else None
    if problem:
        raise VideoDecodeError(problem)


DEADLINE_BYTES = 64 << 20  # a file up to this size gets timeout_s; a larger one proportionally more


def _is_bytes(source):
    return isinstance(source, (bytes, bytearray, memoryview))


def decode_deadline(source, timeout_s):
    """Seconds that decoding ``source`` (a path, bytes, or a list of paths read together) may take:
    ``timeout_s`` up to 64 MiB, scaled by size beyond (a stalled mount slows reading, which grows
    with bytes)."""
    size = 0
    for part in source if isinstance(source, (list, tuple)) else [source]:
        try:
            size += len(part) if _is_bytes(part) else os.stat(part).st_size
        except (OSError, TypeError):  # a file object, or one that is not there: the decoder says so
            pass
    return timeout_s * max(1.0, size / DEADLINE_BYTES)


class _DecodeThread:
    """The daemon thread of this process that decodes under a deadline: one for many decodes (a
    thread per clip was created and torn down thousands of times an epoch), replaced when a decode
    overruns and is abandoned. A forked data-loader worker starts its own (threads do not fork)."""

    def __init__(self):
        import atexit
        import queue

        self.jobs, self.pid = queue.SimpleQueue(), os.getpid()
        threads, ready = torch.get_num_threads(), threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), name="decode-with-deadline", daemon=True)
        self.thread.start()
        ready.wait()
        torch.set_num_threads(threads)  # the default of threads started later, which the line in _serve changed
        atexit.register(self.stop)

    def _serve(self, ready):
        # The processors' torch work here runs on this thread alone. With OpenMP threads of its own,
        # a second team, libgomp holds more threads than there are cores and stops spinning between
        # parallel regions in every team: the caller's training step took twice as long (the tiny
        # recipe's step from a feature cache after reading pixels, benchmarks/feature_cache.py:
        # 0.019 → 0.041 s on 2 cores).
        try:
            torch.get_num_threads()  # torch sets a thread's OpenMP threads at its first call: before the next line
            torch.set_num_threads(1)  # this thread's OpenMP team (and the default for threads started later)
        finally:
            ready.set()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            job()

    def stop(self, wait_s=1.0):
        """Let the thread end before the interpreter does (at exit): a daemon thread still running
        when Python finalises can hold a lock the exit needs (stderr's), and the process aborts. An
        abandoned decode that is still blocked is waited for ``wait_s`` at most."""
        self.jobs.put(None)
        self.thread.join(wait_s)


_decoder = None
_decoder_lock = threading.Lock()  # one decode thread made at a time: each reads and restores torch's default threads


def with_deadline(decode, source, timeout_s, *args):
    """``decode(source, *args)``, abandoned after :func:`decode_deadline` seconds with a
    VideoDecodeError naming ``source``; ``timeout_s`` None or 0: no deadline.

    A decoder blocked in the kernel (a file on a stalled network mount, a pathological stream)
    cannot be interrupted from Python, so decoding runs in a daemon thread that the caller stops
    waiting for. PyAV and decord release the GIL while they read, so the process goes on; the
    abandoned thread is left to finish or block (one thread and one open file), its result, if it
    ever comes, is dropped, and the next decode gets a new thread.
    """
    global _decoder
    if not timeout_s:
        return decode(source, *args)
    deadline = decode_deadline(source, timeout_s)
    outcome, done = {}, threading.Event()

    def run():
        try:
            outcome["value"] = decode(source, *args)
        except BaseException as err:  # handed to the caller's thread, raised there
            outcome["error"] = err
        done.set()

    with _decoder_lock:
        if _decoder is None or _decoder.pid != os.getpid():
            _decoder = _DecodeThread()
        decoder = _decoder
    decoder.jobs.put(run)
    if not done.wait(deadline):
        _decoder = None  # left blocked with the abandoned decode; the next one starts afresh
        name = (f"<{len(source)} bytes>" if _is_bytes(source) else " and ".join(map(str, source))
                if isinstance(source, (list, tuple)) else source)
        raise VideoDecodeError(f"decoding {name} took longer than {deadline:.1f} s (decode_timeout_s); "
                               "abandoned (a stalled file system or a pathological stream?) and skipped")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def load_video(source, n_frms=8, height=224, width=224, sampling="uniform", backend="decord", rng=None):
    """Decode ``n_frms`` frames of a clip (path, bytes or file object), resized to height × width.

    ``sampling``: a name or a callable (see :func:`choose_frames`); ``rng`` (``random.Random`` or
    the ``random`` module) draws its random choices.

    Returns:
        DecodedClip with uint8 frames of shape (C, T, H, W).
    Raises:
        VideoDecodeError: naming the clip, when it is missing or cannot be decoded.
    """
    if isinstance(source, SELF_READING):
        return source.read(n_frms, height, width, sampling, rng)
    _check_exists(source)
    return get_backend(backend).read(source, n_frms, height, width, sampling, rng)


def probe_video(source, backend="decord"):
    """(frame count, fps) of a clip, without decoding its frames."""
    if isinstance(source, SELF_READING):
        return source.probe()
    _check_exists(source)
    return get_backend(backend).probe(source)
