"""A video's sound as ImageBind's audio tower reads it: 2-second clips at 16 kHz, each a Kaldi-style
log mel filterbank of 128 bins × 204 frames, normalised with ImageBind's constants.

Why here, in torch ops: torchaudio (whose ``compliance.kaldi.fbank`` ImageBind calls) has no
release for the torch this project pins, and the filterbank is a few lines of well-defined
arithmetic: 25 ms frames every 10 ms, each without its mean, pre-emphasised (0.97), through a
Hann window ("hanning", symmetric), zero-padded to 512 samples, |FFT|², triangular filters equally
spaced on the mel scale (1127 ln(1 + f / 700)) from 20 Hz to the Nyquist frequency, then the log
(floored at float32's epsilon). The soundtrack is decoded with PyAV.
"""

import functools
import math

import torch

from video_llama.common.errors import UserError

SAMPLE_RATE = 16000
CLIP_SECONDS = 2.0
MEL_BINS = 128
TARGET_FRAMES = 204  # frames a clip's filterbank is padded (or cut) to
CLIPS_PER_VIDEO = 8  # the original demo hears a video in 8 clips (and its audio branch has 8 positions)
FBANK_MEAN, FBANK_STD = -4.268, 9.138  # ImageBind's normalisation of its audio input
FRAME_MS, SHIFT_MS = 25.0, 10.0
PREEMPHASIS = 0.97
LOW_HZ = 20.0
EPSILON = torch.finfo(torch.float32).eps


class NoSoundtrack(UserError, ValueError):
    """A video without an audio stream (the caller falls back to vision only, and says so)."""


def mel(hz):
    return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)


@functools.lru_cache(maxsize=8)  # the same filters for every clip; only read by a matmul
def mel_filters(num_bins, fft_size, sample_rate, low_hz=LOW_HZ):
    """(num_bins, fft_size // 2 + 1) triangular filters, equally spaced on the mel scale from
    ``low_hz`` to the Nyquist frequency; the Nyquist bin itself gets no weight (as Kaldi's)."""
    high = mel(sample_rate / 2)
    low = mel(low_hz)
    step = (high - low) / (num_bins + 1)
    left = low + step * torch.arange(num_bins, dtype=torch.float64)[:, None]
    centre, right = left + step, left + 2 * step
    bins = mel(torch.arange(fft_size // 2, dtype=torch.float64) * sample_rate / fft_size)[None, :]
    weights = torch.clamp(torch.minimum((bins - left) / (centre - left), (right - bins) / (right - centre)), min=0)
    return torch.cat([weights, torch.zeros(num_bins, 1, dtype=torch.float64)], dim=1).float()


def fbank(waveform, sample_rate=SAMPLE_RATE, num_bins=MEL_BINS):
    """(samples,) float waveform → (frames, ``num_bins``) log mel filterbank (Kaldi's defaults, as
    ImageBind calls them: no dither, no energy, power spectrum, frames that fit whole)."""
    frame, shift = int(sample_rate * FRAME_MS / 1000), int(sample_rate * SHIFT_MS / 1000)
    waveform = waveform.float()
    if waveform.numel() < frame:
        return torch.empty(0, num_bins)
    frames = waveform.unfold(0, frame, shift)  # (frames, frame)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - PREEMPHASIS * previous) * torch.hann_window(frame, periodic=False)
    fft_size = 1 << math.ceil(math.log2(frame))
    power = torch.fft.rfft(frames, n=fft_size).abs().pow(2)
    energies = power @ mel_filters(num_bins, fft_size, sample_rate).T
    return energies.clamp(min=EPSILON).log()


def clip_starts(duration, clips, clip_seconds=CLIP_SECONDS):
    """Start times of ``clips`` clips of ``clip_seconds`` spread evenly over ``duration`` seconds
    (the first at 0, the last ending at the end; all at 0 for a shorter sound)."""
    latest = max(duration - clip_seconds, 0.0)
    return [latest * i / max(clips - 1, 1) for i in range(clips)]


def melspec_clips(waveform, sample_rate=SAMPLE_RATE, clips=CLIPS_PER_VIDEO):
    """(samples,) mono waveform → (clips, 1, MEL_BINS, TARGET_FRAMES): each clip's filterbank,
    bins × frames, zero-padded (or cut) to ``TARGET_FRAMES`` and normalised, as ImageBind's audio
    tower takes it."""
    waveform = waveform.float()
    length = int(CLIP_SECONDS * sample_rate)
    out = []
    for start in clip_starts(waveform.numel() / sample_rate, clips):
        begin = int(start * sample_rate)
        clip = waveform[begin:begin + length]
        spec = fbank(clip - clip.mean(), sample_rate).T  # (bins, frames), each clip without its own mean
        spec = torch.nn.functional.pad(spec, (0, max(TARGET_FRAMES - spec.shape[1], 0)))[:, :TARGET_FRAMES]
        out.append((spec - FBANK_MEAN) / FBANK_STD)
    return torch.stack(out)[:, None]


class FirstChannel:
    """Audio frames → float32 arrays of their first channel at ``sample_rate`` (ImageBind's
    filterbank, torchaudio's Kaldi ``fbank``, reads channel 0 of a recording); ``None`` flushes
    what the resampler holds back."""

    def __init__(self, sample_rate=SAMPLE_RATE):
        import av

        self.resampler = av.AudioResampler(format="fltp", rate=sample_rate)  # planar: channel 0 is a row

    def __call__(self, frame):
        return [out.to_ndarray()[0] for out in self.resampler.resample(frame)]


SEEK_LEAD_S = 0.25  # decoded before a span's start: a decoder starting cold (AAC's overlapping frames) settles


def load_soundtrack(source, span=None, sample_rate=SAMPLE_RATE):
    """The first channel of the first audio stream of ``source`` (a path or file-like) at
    ``sample_rate`` (:class:`FirstChannel`), as a float tensor in [-1, 1]. ``span``: (start, end)
    seconds from the sound's first sample, the stretch a window of frames shows: only that much is
    decoded (a seek to it, a stop after it), so the windows of a long video do not each decode all
    of it. Raises NoSoundtrack when there is none."""
    seeks = span is not None and span[0] > SEEK_LEAD_S
    decoded = _decode_soundtrack(source, span, sample_rate, seek=seeks)
    if decoded is None:  # a frame after the seek without a timestamp: nothing says where it is
        if hasattr(source, "seek"):
            source.seek(0)
        decoded = _decode_soundtrack(source, span, sample_rate, seek=False)
    waveform, first = decoded
    if span is None:
        return waveform
    start, end = (max(0, round((t - first) * sample_rate)) for t in span)
    return waveform[start:end]  # a window may start before the sound does: fewer samples


def _decode_soundtrack(source, span, sample_rate, seek):
    """(waveform, the time of its first sample from the sound's first) of ``source`` up to the end
    of ``span``, from ``SEEK_LEAD_S`` before its start when ``seek``; None when a frame after the
    seek has no timestamp. A seek past the sound's end decodes nothing: an empty waveform."""
    import av
    import numpy as np

    with av.open(source) as container:
        if not container.streams.audio:
            raise NoSoundtrack(f"{getattr(source, 'name', source)} has no audio stream")
        stream = container.streams.audio[0]
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        first = 0.0
        if seek:
            first = span[0] - SEEK_LEAD_S
            container.seek(int((origin + first) / stream.time_base), stream=stream)
        first_channel = FirstChannel(sample_rate)
        chunks, placed = [], not seek
        for frame in container.decode(stream):
            time = None if frame.pts is None else float(frame.pts * frame.time_base) - origin
            if not placed:
                if time is None:
                    return None
                first, placed = max(time, 0.0), True  # where the seek landed: at or before the asked time
            if span is not None and time is not None and time > span[1]:
                break
            chunks += first_channel(frame)
        chunks += first_channel(None)  # what the resampler still holds
    return torch.from_numpy(np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), first


class SoundProcessor:
    """path → (clips, 1, MEL_BINS, TARGET_FRAMES) filterbanks of its first audio stream, as the
    original demo reads a video's sound (8 clips of 2 s spread over it); None, with the reason
    kept in ``last_reason``, for a file without sound (no stream, nothing decodable, silence of
    zero length), so that the caller can answer from the frames alone and say why."""

    def __init__(self, clips=CLIPS_PER_VIDEO):
        self.clips = clips
        self.last_reason = ""

    def __call__(self, source, span=None):
        """``source``: a path or file-like; ``span``: (start, end) seconds, the stretch a window of
        frames shows (one clip per 2 s of it, see :func:`window_clips`), else the whole sound."""
        import av

        from video_llama.processors.video_decoding import as_source

        name = getattr(source, "name", source)
        try:
            waveform = load_soundtrack(as_source(source), span)
        except NoSoundtrack as err:
            return self._none(str(err))
        except (av.error.FFmpegError, OSError) as err:
            return self._none(f"the sound of {name} cannot be read ({type(err).__name__}: {err})")
        clips = self.clips if span is None else window_clips(span[1] - span[0])
        if waveform.numel() == 0:
            return self._none(f"{name} has no sound {'there' if span else 'samples'}")
        self.last_reason = ""
        return melspec_clips(waveform, clips=clips)

    def _none(self, reason):
        self.last_reason = reason
        return None


class SoundBuffer:
    """The last ``keep_s`` seconds of a stream's sound (16 kHz mono, by stream time), fed as it is
    read (``frame_stream.stream_frames(on_sound=buffer.add)``), for the filterbanks of a window."""

    def __init__(self, keep_s=30.0, sample_rate=SAMPLE_RATE):
        from collections import deque

        self.keep_s, self.rate = keep_s, sample_rate
        self.chunks = deque()  # (start time, float32 samples)
        self.end = -math.inf  # the time the sound so far reaches

    def add(self, t, samples):
        """Samples starting at stream time ``t``; what repeats sound already held is dropped (a
        followed file read again from a keyframe)."""
        skip = max(0, math.ceil((self.end - t) * self.rate - 1e-6)) if self.chunks else 0
        if skip >= len(samples):
            return
        t, samples = t + skip / self.rate, samples[skip:]
        self.chunks.append((t, torch.as_tensor(samples, dtype=torch.float32)))
        self.end = t + len(samples) / self.rate
        while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) / self.rate < self.end - self.keep_s:
            self.chunks.popleft()

    def waveform(self, t0, t1):
        """The samples between stream times ``t0`` and ``t1`` (fewer where the sound has gaps)."""
        pieces = []
        for start, samples in self.chunks:
            first = max(0, round((t0 - start) * self.rate))
            last = min(len(samples), round((t1 - start) * self.rate))
            if last > first:
                pieces.append(samples[first:last])
        return torch.cat(pieces) if pieces else torch.zeros(0)

    def clips(self, t0, t1, min_cover=0.5):
        """The window's filterbanks as :func:`melspec_clips` makes them (one 2-second clip per 2 s
        of window, at most 8), or None when sound covers less than ``min_cover`` of the window (a
        source without sound, or sound that stopped)."""
        waveform = self.waveform(t0, t1)
        if waveform.numel() < min_cover * (t1 - t0) * self.rate:
            return None
        return melspec_clips(waveform, self.rate, clips=window_clips(t1 - t0))


def window_clips(seconds):
    """The 2-second clips the sound of a window of frames is heard in: one per 2 s, at most
    ``CLIPS_PER_VIDEO``; a whole video is heard in that many, as the original demo hears it."""
    return min(CLIPS_PER_VIDEO, max(1, math.ceil(seconds / CLIP_SECONDS - 1e-6)))
