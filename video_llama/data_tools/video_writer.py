"""Encode frames to a real video file with PyAV (synthetic datasets and tests)."""

from pathlib import Path

import numpy as np

CODECS = {".mp4": "libx264", ".avi": "mpeg4", ".mkv": "libx264", ".webm": "libvpx", ".mov": "libx264"}


def write_video(path, frames, fps=8, gop=8, sound=None, sample_rate=44100):
    """Write uint8 frames (T, H, W, 3) to ``path``; the codec follows the extension. ``sound``: a
    mono float waveform in [-1, 1] at ``sample_rate``, written as an AAC soundtrack (mp4, mov, mkv).

    H.264 is written without B-frames and with a short GOP (a keyframe every ``gop`` frames), so
    decoders seek cheaply and timestamps stay clean (see DESIGN.md on careless re-encodes), and
    tuned for decoding (no CABAC, no deblocking): decord reads 224² clips about a quarter faster
    (18.8 → 14.2 ms for 8 frames at GOP 4, the sample clips re-encoded) for files about 5% larger.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    height, width = frames.shape[1:3]
    codec = CODECS.get(path.suffix.lower(), "libx264")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # one thread: threaded x264 wrote different bytes for the same frames when the CPU was busy
            stream.options = {"bf": "0", "g": str(gop), "crf": "18", "preset": "veryfast", "tune": "fastdecode",
                              "threads": "1"}
        elif codec == "mpeg4":
            stream.options = {"qscale": "3", "bf": "0", "g": str(gop)}  # the default quality smears small shapes
        soundtrack = None
        if sound is not None:  # every stream is added before the first packet
            soundtrack = container.add_stream("aac", rate=sample_rate)
            soundtrack.layout = "mono"
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: stream.height, : stream.width]), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
        if soundtrack is not None:
            samples = np.asarray(sound, dtype=np.float32)
            for start in range(0, samples.size, 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = sample_rate, start
                container.mux(soundtrack.encode(chunk))
            container.mux(soundtrack.encode(None))
    return path
