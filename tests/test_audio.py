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
    # filter 60 by hand: rising from its left neighbour's centre to its own, falling to its right one's
    mel = lambda hz: 1127 * math.log(1 + hz / 700)  # noqa: E731
    left, centre, right = (mel(centre_hz(i)) for i in (59, 60, 61))
    for k in range(257):
        m = mel(k * audio.SAMPLE_RATE / 512)
        expected = max(0.0, min((m - left) / (centre - left), (right - m) / (right - centre))) if k < 256 else 0.0
        assert float(filters[60, k]) == pytest.approx(expected, abs=1e-6)
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


def test_a_window_decodes_its_stretch_of_the_sound_alone(tmp_path):
    """A window of a long video seeks to its sound and stops after it: the filterbanks are those of
    the whole soundtrack's stretch (to the resampler's phase, a fraction of a 16 kHz sample)."""
    from video_llama.data_tools.video_writer import write_video

    path = tmp_path / "long.mp4"
    t = np.arange(12 * 44100) / 44100
    write_video(path, np.zeros((96, 32, 32, 3), np.uint8), sound=0.4 * np.sin(2 * np.pi * (300 + 40 * t) * t))  # a chirp
    whole = audio.load_soundtrack(str(path))
    for span in [(-1.0, 1.0), (2.5, 4.5), (7.3, 9.3), (11.0, 13.0)]:
        part = audio.load_soundtrack(str(path), span)
        stretch = whole[max(0, round(span[0] * audio.SAMPLE_RATE)):round(span[1] * audio.SAMPLE_RATE)]
        assert part.numel() == stretch.numel()  # 1 s before the sound starts, 1 s after it ends: 16000 samples
        clips = audio.window_clips(span[1] - span[0])
        difference = audio.melspec_clips(part, clips=clips) - audio.melspec_clips(stretch, clips=clips)
        assert float(difference.abs().mean()) < 0.01  # of values spread ±0.56 (normalised log-mel)
    assert audio.load_soundtrack(str(path), (20.0, 22.0)).numel() == 0  # past the end: nothing
