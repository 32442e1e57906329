"""Frames as they arrive, with their times: a video file, a file still being written (``follow``),
or a live stream PyAV can open (an RTSP/HTTP/TCP URL, a V4L2 device such as ``/dev/video0``), resized
in the decoder. The mode selector reads clips this way instead of decoding whole files.

A live source is read as a camera must be: a read that waits ``stall_s`` seconds for data gives up
(:class:`StreamStalled`) instead of hanging, and with ``reconnect_max_s`` a source that drops or
stalls is opened again, with backoff. Stream time runs on across such a gap by the wall-clock time
the gap lasted, so a reader never sees time go back, whatever times the reopened stream starts at.
"""

import logging
import math
import os
import threading
import time
from collections import deque

from video_llama.processors.audio import SAMPLE_RATE, FirstChannel
from video_llama.processors.video_decoding import VideoDecodeError, file_problem, no_video_stream

logger = logging.getLogger(__name__)

FIRST_RETRY_S, MAX_RETRY_S = 0.5, 8.0  # reconnecting: 0.5 s before the first try, doubling up to 8 s


class StreamBrokeOff(VideoDecodeError):
    """A stream that stopped with an error after frames had been read (``seconds`` of them)."""

    def __init__(self, message, seconds):
        super().__init__(message)
        self.seconds = seconds


class StreamStalled(StreamBrokeOff):
    """A live source that sent no frame for the stall limit: connected, perhaps, but silent."""


class _NoFrame(Exception):
    """No frame for the stall limit; the caller, which knows the source and stream time, says so."""


def is_live(source):
    """Whether ``source`` is a stream URL or a capture device rather than a file."""
    text = str(source)
    return "://" in text or text.startswith("/dev/video")


def _open(source, timeout_s=10.0):
    """The PyAV container of ``source``; opening, and every read later, waits at most ``timeout_s``."""
    import av

    text = str(source)
    fmt = "v4l2" if text.startswith("/dev/video") else None
    options = {"rtsp_transport": "tcp"} if text.startswith("rtsp://") else {}
    problem = None if is_live(text) else file_problem(text)  # a FIFO is never opened: it would block
    if problem:
        raise VideoDecodeError(f"{problem} (give a video file, a stream URL or a /dev/video device)")
    try:
        container = av.open(text, format=fmt, options=options, timeout=timeout_s)
    except Exception as err:  # av's errors: unreadable data, refused connection, no such device, timeout
        raise VideoDecodeError(f"cannot open {text} with PyAV: {err}") from err
    if not container.streams.video:
        container.close()
        raise no_video_stream(text)
    return container


def check_source(source, timeout_s=10.0):
    """Raise VideoDecodeError now, before a model is loaded, if ``source`` cannot be opened."""
    _open(source, timeout_s).close()


def stream_frames(source, size, follow=False, stall_s=10.0, reconnect_max_s=0.0, on_gap=None,
                  start_timeout_s=30.0, poll_s=0.5, idle_s=5.0, on_sound=None):
    """Yield ``(stream seconds, uint8 (size, size, 3) RGB frame)`` in order, times increasing from 0.
    With ``on_sound``, the source's sound goes to ``on_sound(stream seconds, 16 kHz mono float32
    samples)`` as it is read, on the frames' clock (sound before the first frame is dropped).

    A file is read to its end. With ``follow`` it is still being written: it may take up to
    ``start_timeout_s`` to appear and hold enough to open; when it grows it is opened again and read
    on from the last frame; after ``idle_s`` seconds without growth (checked every ``poll_s``) the
    stream ends. A live source (:func:`is_live`) ends when it closes the stream, unless
    ``reconnect_max_s`` > 0: then a source that closes, breaks off or stalls is opened again until
    no frame has come for that many seconds; ``on_gap(seconds)``, if given, is called before the
    first frame after each such gap (a reader may want to forget what came before it).

    Raises:
        VideoDecodeError: the source cannot be opened or holds no video.
        StreamBrokeOff: decoding failed after some frames were read, or a dropped live source could
            not be opened again within ``reconnect_max_s``.
        StreamStalled: a live source sent no frame for ``stall_s`` seconds (and, reconnecting, kept
            doing so until ``reconnect_max_s``).
    """
    if is_live(source):
        return _live_frames(source, size, stall_s, reconnect_max_s, on_gap, on_sound)
    return _file_frames(source, size, follow, start_timeout_s, poll_s, idle_s, on_sound)


SOUND_WAIT_S = 1.0  # a frame waits at most this long (its count at the stream's rate) for the sound to reach it


def _decoded(container, size, stall_s=None, on_sound=None):
    """``(time in the source's clock, RGB frame)`` of each video frame of ``container``. With
    ``stall_s``, raise :class:`_NoFrame` when reading finds no frame for that long: no data at all
    (PyAV's read timeout), or data without a video frame (a source sending only audio). With
    ``on_sound``, its first audio stream goes to ``on_sound(source time, samples)``, and a frame is
    given out once the sound has reached its time (containers interleave the sound up to a second
    behind the frames), or once ``SOUND_WAIT_S`` of frames wait behind it."""
    import av

    stream = container.streams.video[0]
    rate = float(stream.average_rate or 25)
    count, heard = 0, time.monotonic()
    sound = _SoundReader(container.streams.audio[0], on_sound) if on_sound and container.streams.audio else None
    pending = deque()
    try:
        for packet in container.demux():
            if sound is not None and packet.stream.index == sound.stream.index:
                sound.read(packet)
            elif packet.stream.index == stream.index:
                for frame in packet.decode():
                    t = frame.time if frame.time is not None else count / rate
                    count += 1
                    pending.append((t, frame.to_ndarray(width=size, height=size, format="rgb24")))
            while pending and (sound is None or sound.reached(pending[0][0]) or len(pending) > SOUND_WAIT_S * rate):
                yield pending.popleft()
                heard = time.monotonic()  # the time the reader spent on the frame is not the source's
            if stall_s and time.monotonic() - heard > stall_s:
                raise _NoFrame()
        yield from pending  # the end: nothing more to wait for
    except av.error.ExitError as err:
        if stall_s:  # PyAV's read timeout ended a blocking read
            raise _NoFrame() from err
        raise


class _SoundReader:
    """One audio stream's packets → 16 kHz samples of its first channel (``audio.FirstChannel``),
    on the sound's own clock: the first frame's time and the samples since (the
    resampler holds some back, so its output carries no time of its own). Sound that went missing
    (a frame up to ``MAX_GAP_S`` later than the count) leaves its gap; a source clock that jumps
    back, or further ahead, does not move the sound, which goes on as the frames' stream time does.
    A packet that does not decode is dropped (logged once): the sound never ends the frames."""

    RESYNC_S, MAX_GAP_S = 0.1, 5.0

    def __init__(self, stream, on_sound):
        self.stream, self.on_sound, self.rate = stream, on_sound, SAMPLE_RATE
        self.start, self.samples, self.first_channel, self.broken = None, 0, None, False

    def reached(self, t):
        """Whether the sound read so far reaches source time ``t``."""
        return self.start is not None and self.start + self.samples / self.rate >= t

    def read(self, packet):
        import av

        try:
            frames = packet.decode()
        except (av.error.FFmpegError, ValueError) as err:
            if not self.broken:
                logger.warning("a sound packet could not be decoded and is dropped (%s); the frames go on", err)
            self.broken = True
            return
        for frame in frames:
            if frame.time is None and self.start is None:
                continue
            if self.start is None:
                self.start = frame.time
                self.first_channel = FirstChannel(self.rate)
            elif frame.time is not None:
                missing = frame.time - self.start - self.samples / self.rate
                if self.RESYNC_S < missing <= self.MAX_GAP_S:
                    self.samples += round(missing * self.rate)
            for samples in self.first_channel(frame):
                self.on_sound(self.start + self.samples / self.rate, samples)
                self.samples += samples.size


def _on_stream_clock(on_sound, offset):
    """``on_sound`` fed in stream time: the sound's own clock (see :class:`_SoundReader`) moved by
    ``offset()``, stream time minus the source's, taken once, when the first sound comes after the
    first frame (None until then: that sound is dropped). One per opened source."""
    if on_sound is None:
        return None
    taken = []

    def on_source_clock(t, samples):
        if not taken and offset() is not None:
            taken.append(offset())
        if taken and t + taken[0] >= 0:
            on_sound(t + taken[0], samples)
    return on_source_clock


def _file_frames(path, size, follow, start_timeout_s, poll_s, idle_s, on_sound=None):
    first, last = None, -math.inf
    container = _open_when_written(path, start_timeout_s, poll_s) if follow else _open(path)
    while True:
        sound = _on_stream_clock(on_sound, lambda: None if first is None else -first)
        try:
            if first is not None:  # a reopened, followed file: back to the keyframe before where the last read stopped
                stream = container.streams.video[0]
                container.seek(int((last + first) / stream.time_base), stream=stream, backward=True)
            for t, frame in _decoded(container, size, on_sound=sound):
                first = t if first is None else first
                if t - first <= last:  # already read (a reopened, followed file)
                    continue
                last = t - first
                yield last, frame
        except Exception as err:  # av's errors mid-stream: corrupt data, a truncated file
            if first is None:
                raise VideoDecodeError(f"cannot decode {path} with PyAV: {err}") from err
            raise StreamBrokeOff(f"{path} broke off after {last:.1f} s: {err}", last) from err
        finally:
            container.close()
        if not follow or not _grows(path, poll_s, idle_s):
            return
        container = _open(path)


def _open_when_written(path, start_timeout_s, poll_s):
    """A followed file may not exist yet, or hold too little to open (its writer has not flushed the
    header and first frames): try again every ``poll_s`` until ``start_timeout_s`` has passed."""
    deadline = time.monotonic() + start_timeout_s
    while True:
        try:
            return _open(path)
        except VideoDecodeError as err:
            if time.monotonic() >= deadline:
                raise VideoDecodeError(f"{err} (waited {start_timeout_s:g} s for its writer; wait longer with "
                                       "--start-timeout-s)") from err
        time.sleep(poll_s)


def _grows(path, poll_s, idle_s):
    """Whether the file at ``path`` grows within ``idle_s`` seconds (checked every ``poll_s``)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    waited = 0.0
    while waited < idle_s:
        time.sleep(poll_s)
        waited += poll_s
        if os.path.getsize(path) > size:
            return True
    return False


def _live_frames(source, size, stall_s, reconnect_max_s, on_gap, on_sound=None):
    last, heard, count = 0.0, time.monotonic(), 0  # the last frame's stream time, when it came, frames so far
    try:
        container = _open(source, stall_s)
    except VideoDecodeError as err:  # reconnecting, a source down now is waited for as one that dropped
        if not reconnect_max_s:
            raise
        container = _reopen(source, stall_s, reconnect_max_s, heard, err, last)
    while True:
        step = 1 / float(container.streams.video[0].average_rate or 25)
        previous = None  # this connection's last frame time, in the source's clock
        sound = _on_stream_clock(on_sound, lambda: None if previous is None else last - previous)
        try:
            for t, frame in _decoded(container, size, stall_s, sound):
                if previous is None and count:  # the first frame after a reconnect: on by the gap
                    gap = time.monotonic() - heard
                    logger.warning("%s: reconnected after %.1f s gap", source, gap)
                    last += gap
                    if on_gap:
                        on_gap(gap)
                elif previous is not None:  # on by the source's clock; one frame when that went back
                    last += t - previous if t > previous else step
                previous, heard, count = t, time.monotonic(), count + 1
                yield last, frame
            lost = None  # the source ended the stream
        except _NoFrame:
            lost = StreamStalled(f"{source}: no frame for {stall_s:.1f} s", last)
        except Exception as err:  # av's errors mid-stream: a dropped connection, corrupt data
            if not count and not reconnect_max_s:
                raise VideoDecodeError(f"cannot decode {source} with PyAV: {err}") from err
            lost = StreamBrokeOff(f"{source} broke off after {last:.1f} s: {err}", last)
        finally:
            container.close()
        if not reconnect_max_s:
            if lost:
                raise lost
            return
        logger.warning("%s; reconnecting", lost or f"{source} ended the stream after {last:.1f} s")
        container = _reopen(source, stall_s, reconnect_max_s, heard, lost, last)


def _reopen(source, stall_s, give_up_s, heard, lost, seconds):
    """``source`` opened again after it was ``lost`` (the error that ended the last connection; None:
    it ended the stream), trying 0.5 s later, then 1 s, 2 s, ... (at most MAX_RETRY_S) apart; gives
    up once no frame has come for ``give_up_s`` seconds since the last one (``heard``)."""
    wait = FIRST_RETRY_S
    while True:
        silent = time.monotonic() - heard
        if silent >= give_up_s:
            kind = StreamStalled if isinstance(lost, StreamStalled) else StreamBrokeOff
            raise kind(f"{source}: no frame for {silent:.1f} s; gave up reconnecting after {give_up_s:g} s "
                       f"(--reconnect-max-s); last: {lost or 'the source ended the stream'}", seconds)
        time.sleep(min(wait, give_up_s - silent))
        wait = min(2 * wait, MAX_RETRY_S)
        try:
            return _open(source, stall_s)
        except VideoDecodeError as err:
            lost = err


def watched(frames, limit_s, on_hang):
    """``frames``, with ``on_hang(seconds)`` called from a thread once the source has kept the reader
    waiting ``limit_s`` seconds for one frame. The last resort for reads PyAV's timeout cannot
    interrupt (a V4L2 driver blocks in the kernel); the reader's own time between frames does not count."""
    waiting_since = [time.monotonic()]  # None while the reader holds a frame
    done = threading.Event()

    def watch():
        while not done.wait(min(0.5, limit_s / 4)):
            since = waiting_since[0]
            if since is not None and time.monotonic() - since > limit_s:
                on_hang(time.monotonic() - since)
                return

    threading.Thread(target=watch, name="frame-source-watchdog", daemon=True).start()
    try:
        for item in frames:
            waiting_since[0] = None
            yield item
            waiting_since[0] = time.monotonic()
    finally:
        done.set()
