"""The audio input of ImageBind's audio tower, computed with torch ops: checked against values
derived by hand (a pure tone's mel bin, silence, the frame count, the normalisation)."""

import math

import numpy as np
import pytest
import torch

from video_llama.processors import audio


def tone(hz, seconds=2.0, rate=audio.SAMPLE_RATE, amplitude=0.5):
    t = torch.arange(int(seconds * rate)) / rate
    return amplitude * torch.sin(2 * math.pi * hz * t)


def centre_hz(bin_index, bins=audio.MEL_BINS, rate=audio.SAMPLE_RATE):
    """The frequency at the centre of mel filter ``bin_index``, from the mel scale by hand."""
    low, high = 1127 * math.log(1 + 20 / 700), 1127 * math.log(1 + rate / 2 / 700)
    centre = low + (bin_index + 1) * (high - low) / (bins + 1)
    return 700 * (math.exp(centre / 1127) - 1)


@pytest.mark.parametrize("hz", [300.0, 1000.0, 4000.0])
def test_a_pure_tone_lights_the_mel_bin_around_its_frequency(hz):
    bank = audio.fbank(tone(hz))
    assert bank.shape == (1 + (32000 - 400) // 160, 128)  # 25 ms frames every 10 ms that fit whole: 198
    loudest = int(bank.mean(dim=0).argmax())
    nearest = min(range(128), key=lambda i: abs(centre_hz(i) - hz))  # the filter centred nearest the tone
    assert abs(loudest - nearest) <= 1  # or its neighbour: the spectrum has a bin every 31.25 Hz


def test_filters_are_triangles_on_the_mel_scale():
    filters = audio.mel_filters(128, 512, audio.SAMPLE_RATE)
    assert filters.shape == (128, 257) and float(filters[:, -1].abs().sum()) == 0  # no weight on the Nyquist bin
    # each filter (where the spectrum's bins are finer than the filters) is a peak at its own centre
    # (by the mel scale written out above), nothing beyond its neighbours' centres
    bin_hz = audio.SAMPLE_RATE / 512
    for i in range(40, 127):
        weights = filters[i]
        support = [k * bin_hz for k in range(257) if weights[k] > 0]
        assert centre_hz(i - 1) < min(support) and max(support) < centre_hz(i + 1)
        peak = int(weights.argmax())
        assert abs(peak * bin_hz - centre_hz(i)) < bin_hz and float(weights[peak]) > 0.5
        rising, falling = weights[:peak + 1], weights[peak:]
        assert bool((rising[1:] >= rising[:-1]).all()) and bool((falling[1:] <= falling[:-1]).all())
    reached = filters.sum(dim=1) > 0  # the lowest filters are narrower than the spectrum's 31.25 Hz bins
    peaks = filters[reached].argmax(dim=1)
    assert int(reached.sum()) > 100 and bool((peaks[1:] >= peaks[:-1]).all())  # centres rise with the bin


def test_silence_and_the_normalisation():
    spec = audio.melspec_clips(torch.zeros(3 * audio.SAMPLE_RATE), clips=2)
    assert spec.shape == (2, 1, 128, 204)
    floor = (math.log(torch.finfo(torch.float32).eps) + 4.268) / 9.138  # log(eps) through ImageBind's constants
    frames = 1 + (32000 - 400) // 160
    assert torch.allclose(spec[..., :frames], torch.full_like(spec[..., :frames], floor))
    assert torch.allclose(spec[..., frames:], torch.full_like(spec[..., frames:], 4.268 / 9.138))  # zero-padded frames


def test_clips_spread_over_the_sound():
    assert audio.clip_starts(10.0, 5) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert audio.clip_starts(1.0, 3) == [0.0, 0.0, 0.0]  # shorter than a clip: each from the start
    short = audio.melspec_clips(tone(440.0, seconds=0.5), clips=1)  # 48 frames of sound, the rest padding
    padding = short[0, 0, :, 48:]
    assert short.shape == (1, 1, 128, 204) and torch.allclose(padding, torch.full_like(padding, 4.268 / 9.138))


def test_the_soundtrack_of_a_video_and_of_a_video_without_one(tmp_path):
    from video_llama.data_tools.video_writer import write_video

    path = tmp_path / "with_sound.mp4"
    samples = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(2 * 44100) / 44100)
    write_video(path, np.zeros((16, 32, 32, 3), np.uint8), sound=samples)  # an AAC soundtrack at 44.1 kHz
    waveform = audio.load_soundtrack(str(path))
    assert abs(waveform.numel() / audio.SAMPLE_RATE - 2.0) < 0.1  # resampled to 16 kHz
    spectrum = torch.fft.rfft(waveform[4000:20000]).abs()
    assert abs(float(spectrum.argmax()) * audio.SAMPLE_RATE / 16000 - 1000) < 5  # the tone survived
    silent = tmp_path / "silent.mp4"
    write_video(silent, np.zeros((8, 32, 32, 3), np.uint8))
    with pytest.raises(audio.NoSoundtrack, match="no audio stream"):
        audio.load_soundtrack(str(silent))


def test_a_window_decodes_its_stretch_of_the_sound_alone(tmp_path, monkeypatch):
    """A window of a long video seeks to its sound and stops after it: the filterbanks are those of
    the whole soundtrack's stretch (to the resampler's phase, a fraction of a 16 kHz sample), and
    a window after the sound's end (a soundtrack shorter than the frames) has none."""
    import wave

    from video_llama.data_tools.video_writer import write_video

    path = tmp_path / "long.mp4"
    t = np.arange(12 * 44100) / 44100
    chirp = 0.4 * np.sin(2 * np.pi * (300 + 40 * t) * t)  # every moment its own pitch
    write_video(path, np.zeros((96, 32, 32, 3), np.uint8), sound=chirp)
    decoded = []
    real = audio.FirstChannel.__call__
    monkeypatch.setattr(audio.FirstChannel, "__call__", lambda self, frame: decoded.append(frame) or real(self, frame))
    whole = audio.load_soundtrack(str(path))
    frames_of_whole = len(decoded)
    for span in [(-1.0, 1.0), (2.5, 4.5), (7.3, 9.3), (11.0, 13.0)]:
        decoded.clear()
        part = audio.load_soundtrack(str(path), span)
        stretch = whole[max(0, round(span[0] * audio.SAMPLE_RATE)):round(span[1] * audio.SAMPLE_RATE)]
        assert part.numel() == stretch.numel()  # 1 s before the sound starts, 1 s after it ends: 16000 samples
        clips = audio.window_clips(span[1] - span[0])
        difference = audio.melspec_clips(part, clips=clips) - audio.melspec_clips(stretch, clips=clips)
        assert float(difference.abs().mean()) < 0.01  # of values spread ±0.56 (normalised log-mel)
        assert len(decoded) < frames_of_whole * (span[1] + 0.5) / 12  # nothing decoded after the window
        assert span[0] < 1 or len(decoded) < frames_of_whole * (span[1] - span[0] + 0.5) / 12  # nor long before it
    short_sound = tmp_path / "short_sound.mkv"  # 12 s of frames, 5 s of sound
    write_video(short_sound, np.zeros((96, 32, 32, 3), np.uint8), sound=chirp[:5 * 44100])
    recording = tmp_path / "recording.wav"
    with wave.open(str(recording), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes((chirp[::3][:12 * 16000] * 32767).astype("<i2").tobytes())
    for source, span in [(path, (20.0, 22.0)), (short_sound, (8.0, 10.0)), (recording, (12.5, 14.5)), (recording, (20.0, 22.0))]:
        assert audio.load_soundtrack(str(source), span).numel() == 0  # past the end: nothing
        assert audio.SoundProcessor()(str(source), span) is None  # and the frames are answered alone
