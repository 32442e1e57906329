"""Frames as a camera sends them: a real MPEG-TS stream on the loopback, muxed by PyAV in a
subprocess (a camera that streams, stalls, or drops and comes back), files still being written, and
the watchdog for reads nothing can interrupt."""

import contextlib
import inspect
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from video_llama.processors import frame_stream
from video_llama.processors.frame_stream import StreamBrokeOff, StreamStalled, stream_frames
from video_llama.processors.video_decoding import VideoDecodeError

FPS = 25


def serve(port, segments, fps, size=64, hz=None):
    """A camera on tcp://127.0.0.1:PORT. Each segment, ``FRAMES:close`` or ``FRAMES:stall``, waits for
    a client and sends it FRAMES frames at real-time pace (frame i has brightness 5 i), then closes the
    connection and listens again for the next segment, or stalls: keeps it open, silent, until killed.
    With ``hz``, a microphone too: a tone of that frequency beside the frames (MP2, 32 kHz).
    A client that goes away ends its segment early. Runs alone in a subprocess (PyAV holds the GIL
    while it waits for a client), so it imports what it needs itself."""
    import contextlib
    import time

    import av
    import numpy as np

    for segment in segments:
        count, then = segment.split(":")
        out = av.open(f"tcp://127.0.0.1:{port}?listen=1&listen_timeout=20000", "w", format="mpegts")
        try:
            stream = out.add_stream("mpeg4", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            sound = None
            if hz:
                sound = out.add_stream("mp2", rate=32000)
                sound.layout = "mono"
            out.start_encoding()  # waits for the client
            start, sent = time.monotonic(), 0
            for i in range(int(count)):
                frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 5 * i % 256, np.uint8), format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
                while sound is not None and sent < (i + 1) * 32000 / fps:  # the sound up to this frame's end
                    wave = 0.5 * np.sin(2 * np.pi * hz * np.arange(sent, sent + 1152) / 32000)
                    chunk = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None], format="flt",
                                                       layout="mono")
                    chunk.sample_rate, chunk.pts = 32000, sent
                    out.mux(sound.encode(chunk))
                    sent += 1152
                time.sleep(max(0.0, start + (i + 1) / fps - time.monotonic()))
            if then == "stall":
                time.sleep(3600)
            out.mux(stream.encode())
        except OSError:  # the client went away (PyAV's errors are OSErrors too)
            pass
        finally:
            with contextlib.suppress(OSError):
                out.close()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port):
    """Whether something listens on 127.0.0.1:port, read from /proc so no connection is used up
    (the camera serves the first one that comes)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(row.split()[1] == f"0100007F:{port:04X}" and row.split()[3] == "0A" for row in rows)  # 0A: LISTEN


@contextlib.contextmanager
def camera(*segments, hz=None):
    """The URL of a :func:`serve` camera, listening; it is killed when the block ends."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("the loopback camera needs Linux's /proc/net/tcp to know when it listens")
    port = free_port()
    code = f"{inspect.getsource(serve)}\nserve({port}, {list(segments)!r}, {FPS}, hz={hz!r})"
    server = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while not listening(port):
            assert server.poll() is None, f"the camera server exited with {server.returncode}"
            assert time.monotonic() < deadline, "the camera server did not listen within 20 s"
            time.sleep(0.02)
        yield f"tcp://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


def read(frames):
    """[(stream time, wall time it arrived, mean brightness)] of ``frames``, and the error that ended them."""
    got, error = [], None
    try:
        for t, frame in frames:
            got.append((t, time.monotonic(), float(frame.mean())))
    except VideoDecodeError as err:
        error = err
    return got, error


def loudness(sound, t0, t1):
    """Root mean square of the sound between stream times ``t0`` and ``t1``."""
    waveform = sound.waveform(t0, t1)
    return float(waveform.square().mean().sqrt()) if waveform.numel() else 0.0


def bursts(seconds, on, rate=44100, hz=1000):
    """A waveform of ``seconds`` that sounds a tone during each (start, end) of ``on``, silent between."""
    t = np.arange(int(seconds * rate)) / rate
    loud = np.zeros_like(t, dtype=bool)
    for start, end in on:
        loud |= (t >= start) & (t < end)
    return 0.5 * np.sin(2 * np.pi * hz * t) * loud


def test_a_live_stream_brings_its_sound_on_the_frames_clock():
    import torch

    from video_llama.processors.audio import SAMPLE_RATE, SoundBuffer

    sound = SoundBuffer()
    with camera("50:close", hz=1000) as url:
        got, error = read(stream_frames(url, 32, stall_s=5, on_sound=sound.add))
    assert error is None and len(got) == 50  # 2 s of frames
    waveform = sound.waveform(0.0, 1.9)
    assert waveform.numel() >= 0.9 * 1.9 * SAMPLE_RATE  # heard all along the frames (the encoder's delay aside)
    spectrum = torch.fft.rfft(waveform[:SAMPLE_RATE]).abs()
    assert abs(float(spectrum.argmax()) - 1000) <= 2  # the tone, resampled to 16 kHz
    assert sound.clips(0.0, 2.0).shape == (1, 1, 128, 204) and sound.clips(3.0, 5.0) is None


def test_sound_keeps_its_place_across_a_jump_of_the_sources_clock(tmp_path):
    """Two recordings sent one after the other on one connection, each starting its clock at 0 and
    sounding from 0.5 to 1.0 s: on the stream's clock the second burst comes 2 s after the first."""
    import threading

    from video_llama.data_tools.video_writer import write_video
    from video_llama.processors.audio import SoundBuffer

    frames = np.stack([np.full((32, 32, 3), 5 * i, np.uint8) for i in range(50)])  # 2 s at 25 fps
    parts = [write_video(tmp_path / f"part{i}.ts", frames, fps=25, sound=bursts(2.0, [(0.5, 1.0)])) for i in range(2)]
    payload = b"".join(part.read_bytes() for part in parts)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def send():
        connection, _ = server.accept()
        with connection:
            connection.sendall(payload)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sound = SoundBuffer()
    got, error = read(stream_frames(f"tcp://127.0.0.1:{port}", 32, stall_s=5, on_sound=sound.add))
    server.close()
    assert error is None and len(got) == 100 and got[-1][0] == pytest.approx(3.96, abs=0.05)
    quiet, loud = loudness(sound, 0.1, 0.4), loudness(sound, 0.6, 0.9)
    assert loud > 0.2 > 0.02 > quiet
    assert loudness(sound, 2.6, 2.9) > 0.2 and loudness(sound, 2.1, 2.4) < 0.02 and loudness(sound, 1.2, 1.9) < 0.02


def test_a_file_gives_out_each_frame_once_its_sound_has_reached_it(tmp_path):
    """Containers interleave the sound up to a second behind the frames: a frame is given out once
    the sound reaches it, so a window decided at a frame hears all of its sound."""
    from video_llama.data_tools.video_writer import write_video
    from video_llama.processors.audio import SoundBuffer

    frames = np.stack([np.full((32, 32, 3), 5 * i, np.uint8) for i in range(48)])  # 6 s at 8 fps
    path = write_video(tmp_path / "clip.mp4", frames, fps=8, sound=bursts(6.0, [(1.0, 2.0), (4.0, 5.0)]))
    sound, reached = SoundBuffer(), []
    for t, _ in stream_frames(path, 32, on_sound=sound.add):
        reached.append((t, sound.end))
    # from the second frame (the sound read before the first is dropped: nothing places it yet) to
    # the last second (where the sound has ended)
    assert len(reached) == 48 and all(end >= t for t, end in reached[1:-8])
    assert loudness(sound, 1.1, 1.9) > 0.2 and loudness(sound, 4.1, 4.9) > 0.2 and loudness(sound, 2.2, 3.8) < 0.02


def test_a_live_stream_arrives_in_order_as_it_is_sent():
    with camera("30:close") as url:
        asked = time.monotonic()
        got, error = read(stream_frames(url, 32, stall_s=5))
    assert error is None  # the camera closed the stream: the end, not an error
    times, arrived, brightness = zip(*got)
    assert len(got) == 30 and times[0] == 0.0 and all(b > a for a, b in zip(times, times[1:]))
    assert times[-1] == pytest.approx(29 / FPS, abs=0.01)
    assert all(b > a for a, b in zip(brightness, brightness[1:]))  # in order
    assert arrived[-1] - asked >= times[-1]  # live: the reader waited for each frame to be sent


@pytest.mark.slow
def test_a_stalled_stream_ends_with_an_error_instead_of_hanging():
    with camera("25:stall") as url:
        got, error = read(stream_frames(url, 32, stall_s=1))
        ended = time.monotonic()
    assert len(got) >= 20, error  # what came before the stall was read
    assert isinstance(error, StreamStalled) and f"{url}: no frame for 1.0 s" in str(error)
    assert ended - got[-1][1] < 2 and error.seconds == got[-1][0]


@pytest.mark.slow
def test_a_dropped_stream_is_reopened_with_time_running_on_across_the_gap(caplog):
    caplog.set_level(logging.WARNING, logger="video_llama.processors.frame_stream")
    gaps = []
    with camera("25:close", "25:close") as url:  # closes after 1 s, serves again, then is gone
        got, error = read(stream_frames(url, 32, stall_s=2, reconnect_max_s=1.0, on_gap=gaps.append))
    times, arrived, brightness = zip(*got)
    assert len(got) == 50 and all(b > a for a, b in zip(times, times[1:]))  # both connections, time never back
    resumed = next(i for i in range(1, len(got)) if brightness[i] < brightness[i - 1])  # the camera's frame 0 again
    gap = times[resumed] - times[resumed - 1]
    assert gap >= frame_stream.FIRST_RETRY_S  # the gap shows in stream time: the wall-clock time it lasted
    assert gap == pytest.approx(arrived[resumed] - arrived[resumed - 1], abs=0.1)
    assert f"{url}: reconnected after {gap:.1f} s gap" in caplog.messages and gaps == [pytest.approx(gap)]
    # after the second close nothing listens: it gives up once no frame came for reconnect_max_s
    assert type(error) is StreamBrokeOff and "gave up reconnecting after 1 s" in str(error)
    assert "Connection refused" in str(error)


def clip_bytes(tmp_path, seconds=2):
    from video_llama.data_tools.video_writer import write_video

    path = tmp_path / "source.mkv"
    write_video(path, np.zeros((seconds * 8, 32, 32, 3), np.uint8), fps=8)
    return path.read_bytes()


def test_a_followed_file_is_waited_for_until_its_writer_has_written_enough(tmp_path):
    data, target = clip_bytes(tmp_path), tmp_path / "recording.mkv"

    def writer():  # appears late, with too little to open at first
        time.sleep(0.3)
        target.write_bytes(data[:64])
        time.sleep(0.5)
        target.write_bytes(data)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        got, error = read(stream_frames(target, 32, follow=True, start_timeout_s=5, poll_s=0.1, idle_s=0.3))
    finally:
        thread.join()
    assert error is None and len(got) == 16

    with pytest.raises(VideoDecodeError, match=r"video file not found: .*never.mkv.*waited 0.3 s for its writer.*--start-timeout-s"):
        list(stream_frames(tmp_path / "never.mkv", 32, follow=True, start_timeout_s=0.3, poll_s=0.1))


def test_the_watchdog_calls_out_a_source_that_blocks_but_not_a_slow_reader():
    def source(block_s):
        yield 0.0, None
        time.sleep(block_s)  # a read stuck in a driver
        yield 1.0, None

    hangs = []
    assert len(list(frame_stream.watched(source(0.6), 0.2, hangs.append))) == 2
    assert len(hangs) == 1 and hangs[0] > 0.2
    hangs.clear()
    for _ in frame_stream.watched(source(0.0), 0.2, hangs.append):
        time.sleep(0.4)  # the reader's own work between frames is not the source's
    assert hangs == []
