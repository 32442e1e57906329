"""Frames as they arrive, with their times: a video file, a file still being written (``follow``),
or a live stream PyAV can open (an RTSP/HTTP URL, a V4L2 device such as ``/dev/video0``), resized
in the decoder. The mode selector reads clips this way instead of decoding whole files."""

import math
import os
import time
from pathlib import Path

from video_llama.processors.video_decoding import VideoDecodeError


class StreamBrokeOff(VideoDecodeError):
    """A stream that stopped with an error after frames had been read (``seconds`` of them)."""

    def __init__(self, message, seconds):
        super().__init__(message)
        self.seconds = seconds


def _open(source):
    import av

    text = str(source)
    fmt = "v4l2" if text.startswith("/dev/video") else None
    options = {"rtsp_transport": "tcp"} if text.startswith("rtsp://") else {}
    if fmt is None and "://" not in text and not Path(text).is_file():
        raise VideoDecodeError(f"{text}: no such file (give a video file, a stream URL or a /dev/video device)")
    try:
        container = av.open(text, format=fmt, options=options, timeout=10.0)
    except Exception as err:  # av's errors: unreadable data, refused connection, no such device
        raise VideoDecodeError(f"cannot open {text} with PyAV: {err}") from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{text} holds no video stream")
    return container


def check_source(source):
    """Raise VideoDecodeError now, before a model is loaded, if ``source`` cannot be opened."""
    _open(source).close()


def stream_frames(source, size, follow=False, poll_s=0.5, idle_s=5.0):
    """Yield ``(seconds since the first frame, uint8 (size, size, 3) RGB frame)`` in order.

    With ``follow`` a file that ends is watched: when it grows it is opened again and read on
    from the last frame; after ``idle_s`` seconds without growth the stream ends.

    Raises:
        VideoDecodeError: the source cannot be opened or holds no video.
        StreamBrokeOff: decoding failed after some frames were read.
    """
    first, last, count = None, -math.inf, 0
    while True:
        try:
            container = _open(source)
        except VideoDecodeError:  # a followed file whose writer has not flushed its first frames yet
            if follow and count == 0 and _grows(source, poll_s, idle_s):
                continue
            raise
        try:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 25)
            if follow and last > -math.inf:  # back to the keyframe before where the last read stopped
                container.seek(int((last + (first or 0.0)) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else count / rate
                first = t if first is None else first
                if t - first <= last:  # already read (a reopened, followed file)
                    continue
                last, count = t - first, count + 1
                yield last, frame.to_ndarray(width=size, height=size, format="rgb24")
        except Exception as err:  # av's errors mid-stream: corrupt data, a dropped connection
            if count == 0:
                raise VideoDecodeError(f"cannot decode {source} with PyAV: {err}") from err
            raise StreamBrokeOff(f"{source} broke off after {last:.1f} s: {err}", last) from err
        finally:
            container.close()
        if not follow or not _grows(source, poll_s, idle_s):
            return


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
