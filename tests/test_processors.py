import io

import numpy as np
import pytest
import torch

from video_llama.processors import AlproVideoEvalProcessor, AlproVideoTrainProcessor, BlipCaptionProcessor
from video_llama.processors.normalization import CLIP_MEAN, CLIP_STD
from video_llama.processors.pixel_plan import motion_image
from video_llama.processors.video_decoding import VideoDecodeError, get_backend, load_video, sample_indices

from conftest import gradient_clip


def test_uniform_and_headtail_indices():
    assert sample_indices(24, 8, "uniform") == [0, 3, 6, 9, 12, 15, 18, 21]
    import random

    idx = sample_indices(24, 8, "headtail", random.Random(0))
    assert len(idx) == 8 and all(i < 12 for i in idx[:4]) and all(12 <= i < 24 for i in idx[4:])
    assert idx == sample_indices(24, 8, "headtail", random.Random(0))  # reproducible from the rng
    assert sample_indices(3, 8, "headtail") == [0, 0, 0, 1, 1, 1, 2, 2]  # short: repeat uniformly


def test_sampling_setting_overrides_the_processor_default(clips_dir):
    import random

    uniform_train = AlproVideoTrainProcessor.from_config({"n_frms": 8, "image_size": 32, "sampling": "uniform"})
    random.seed(3)
    assert uniform_train.load(clips_dir / "clip0.mp4").indices == [0, 3, 6, 9, 12, 15, 18, 21]
    random.seed(3)
    clip = AlproVideoTrainProcessor.from_config({"n_frms": 8, "image_size": 32}).load(clips_dir / "clip0.mp4")
    assert clip.indices != [0, 3, 6, 9, 12, 15, 18, 21]  # headtail by default
    with pytest.raises(ValueError, match="'headtial' is not a frame sampling; use uniform or headtail"):
        AlproVideoEvalProcessor.from_config({"sampling": "headtial"})


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_eval_processor_frames_indices_and_normalisation(clips_dir, backend):
    proc = AlproVideoEvalProcessor.from_config({"n_frms": 8, "image_size": 32, "backend": backend})
    frames = proc(clips_dir / "clip0.mp4")  # the LAVIS contract: path in, frames tensor out
    assert frames.shape == (3, 8, 32, 32) and frames.dtype == torch.float32
    clip = proc.clip_info(clips_dir / "clip0.mp4")
    assert clip.indices == [0, 3, 6, 9, 12, 15, 18, 21] and clip.num_frames == 24 and clip.fps == 8
    # red channel encodes the frame index: undo the CLIP normalisation and read it back
    red = frames[0].mean(dim=(1, 2)) * CLIP_STD[0] + CLIP_MEAN[0]
    expected = torch.tensor([i / 23 for i in clip.indices])
    assert torch.allclose(red, expected, atol=0.03)


def test_train_processor_crop_is_shared_and_seeded(clips_dir):
    import random

    proc = AlproVideoTrainProcessor.from_config({"n_frms": 4, "image_size": 32, "per_clip_norm": True})
    random.seed(7)
    a, clip_a = proc(clips_dir / "clip1.mp4"), proc.clip_info(clips_dir / "clip1.mp4")
    random.seed(7)
    b, clip_b = proc(clips_dir / "clip1.mp4"), proc.clip_info(clips_dir / "clip1.mp4")
    assert a.shape == (3, 4, 32, 32) and torch.equal(a, b) and clip_a.indices == clip_b.indices
    per_channel = a.flatten(1)  # per-clip standardised, channel by channel
    assert per_channel.mean(1).abs().max() < 1e-4
    assert all(0.8 < s <= 1.0 for s in per_channel.std(1).tolist())  # slightly under 1 for a flat channel


@pytest.mark.parametrize("processor, settings", [
    (AlproVideoTrainProcessor, {"per_clip_norm": True}), (AlproVideoTrainProcessor, {}), (AlproVideoEvalProcessor, {})])
def test_prepared_frames_finished_later_equal_the_processed_ones(clips_dir, processor, settings):
    """run.pixels_on_device: uint8 frames + a plan drawn in the worker, finished on the device,
    are bit for bit what the processor returns in one go (same random draws, same ops)."""
    import random

    from video_llama.conversation.collate import stack_in_memory_order
    from video_llama.processors.pixel_plan import batch_to_device

    proc = processor.from_config({"n_frms": 4, "image_size": 32, **settings})
    random.seed(5)
    whole = [proc(clips_dir / f"clip{i}.mp4") for i in (1, 2)]
    random.seed(5)
    prepared = [proc.prepare(clips_dir / f"clip{i}.mp4") for i in (1, 2)]
    assert all(frames.dtype == torch.uint8 and frames.shape == (3, 4, 32, 32) for frames, _ in prepared)
    assert (prepared[0][1].crop is None) == (processor is AlproVideoEvalProcessor)
    images = stack_in_memory_order([f for f, _ in prepared])  # as collated: a copy in the decoder's (T, H, W, C) order
    assert torch.equal(images, torch.stack([f for f, _ in prepared])) and images.permute(0, 2, 3, 4, 1).is_contiguous()
    batch = {"image": images, "pixel_plan": [p for _, p in prepared], "video": ["a", "b"]}
    finished = batch_to_device(batch, "cpu")
    assert "pixel_plan" not in finished and finished["video"] == ["a", "b"]
    assert torch.equal(finished["image"], torch.stack(whole))


def test_a_subclass_with_its_own_augment_is_finished_in_the_worker(clips_dir):
    class Gray(AlproVideoTrainProcessor):
        def augment(self, frames):
            return super().augment(frames).float().mean(dim=0, keepdim=True).expand_as(frames)

    frames, plan = Gray.from_config({"n_frms": 4, "image_size": 32}).prepare(clips_dir / "clip0.mp4")
    assert plan is None and frames.dtype == torch.float32 and frames.shape == (3, 4, 32, 32)
    gray = [frames[c] * CLIP_STD[c] + CLIP_MEAN[c] for c in range(3)]  # its augment ran: channels alike
    assert torch.allclose(gray[0], gray[1], atol=1e-3) and torch.allclose(gray[0], gray[2], atol=1e-3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bytes_equal_file(clips_dir, backend):
    data = (clips_dir / "clip2.mp4").read_bytes()
    from_file = load_video(clips_dir / "clip2.mp4", 6, 32, 32, backend=backend)
    from_bytes = get_backend(backend).read(data, 6, 32, 32, "uniform")
    from_buffer = load_video(io.BytesIO(data), 6, 32, 32, backend=backend)
    assert torch.equal(from_file.frames, from_bytes.frames) and torch.equal(from_file.frames, from_buffer.frames)


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])  # mkv stores no frame count
def test_pyav_samples_the_same_frames_as_decord(tmp_path, suffix):
    from video_llama.data_tools.video_writer import write_video

    path = write_video(tmp_path / f"clip{suffix}", gradient_clip(20, seed=3))
    by_decord = load_video(path, 6, 32, 32, backend="decord")
    by_pyav = load_video(path, 6, 32, 32, backend="pyav")
    assert by_pyav.num_frames == by_decord.num_frames == 20
    assert by_pyav.indices == by_decord.indices == [0, 3, 6, 10, 13, 16]
    red = lambda clip: clip.frames[0].float().mean(dim=(1, 2)) / 255  # noqa: E731  red encodes the frame index
    assert torch.allclose(red(by_pyav), torch.tensor([i / 19 for i in by_pyav.indices]), atol=0.03)
    assert (by_pyav.frames.float() - by_decord.frames.float()).abs().mean() < 3


def test_a_clip_of_keyframes_decodes_only_the_sampled_frames(tmp_path, monkeypatch):
    import random

    from video_llama.data_tools.video_writer import write_video
    from video_llama.processors.video_decoding import KeyframeVideo, PyAVBackend, probe_video

    data = write_video(tmp_path / "keyframes.mp4", gradient_clip(30, height=32, width=32, seed=5), gop=1).read_bytes()
    by_decord = load_video(data, 6, 32, 32, backend="decord")
    monkeypatch.setattr(PyAVBackend, "_decode", None)  # the path that decodes every frame is not taken
    for clip in (load_video(data, 6, 32, 32, backend="pyav"), load_video(KeyframeVideo(data), 6, 32, 32)):
        assert (clip.indices, clip.num_frames, clip.fps) == (by_decord.indices, 30, 8.0)
        assert torch.equal(clip.frames, by_decord.frames)  # at the stored size, the same pixels as decord
    drawn = [load_video(source, 6, 32, 32, "headtail", backend, rng=random.Random(7))
             for source, backend in ((data, "decord"), (KeyframeVideo(data), "decord"))]
    assert drawn[0].indices == drawn[1].indices and torch.equal(drawn[0].frames, drawn[1].frames)
    assert probe_video(KeyframeVideo(data)) == probe_video(data) == (30, 8.0)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_broken_and_missing_clips_raise_with_path(clips_dir, backend):
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        load_video(clips_dir / "broken.mp4", 4, 32, 32, backend=backend)
    with pytest.raises(VideoDecodeError, match="not found: .*nope.mp4"):
        load_video(clips_dir / "nope.mp4", 4, 32, 32, backend=backend)


def test_short_clip_repeats_frames(clips_dir):
    proc = AlproVideoEvalProcessor.from_config({"n_frms": 8, "image_size": 32})
    frames, clip = proc(clips_dir / "short.avi"), proc.clip_info(clips_dir / "short.avi")
    assert frames.shape[1] == 8 and clip.is_short and clip.num_frames == 3


def test_clip_info_of_a_processor_that_decodes_in_its_own_call(clips_dir):
    """A LAVIS-style subclass overrides ``__call__`` alone; clip_info then reads the container."""

    class Lavis(AlproVideoEvalProcessor):
        def __call__(self, vpath):
            return torch.zeros(3, self.config.n_frms, 8, 8)

    proc = Lavis.from_config({"n_frms": 8, "image_size": 32})
    assert proc(clips_dir / "clip0.mp4").shape == (3, 8, 8, 8)
    info = proc.clip_info(clips_dir / "clip0.mp4")
    assert (info.num_frames, info.fps, info.indices) == (24, 8.0, [0, 3, 6, 9, 12, 15, 18, 21])


def test_unknown_processor_setting_is_refused():
    with pytest.raises(ValueError, match="n_frm"):
        AlproVideoEvalProcessor.from_config({"n_frm": 8})


def test_caption_processor():
    proc = BlipCaptionProcessor.from_config({"max_words": 4})
    assert proc("A Man (walking)   quickly: across the STREET.") == "a man walking quickly"


def test_image_processors():
    from PIL import Image

    from video_llama.processors import Blip2ImageEvalProcessor, Blip2ImageTrainProcessor

    image = Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8))
    assert Blip2ImageEvalProcessor.from_config({"image_size": 32})(image).shape == (3, 32, 32)
    assert Blip2ImageTrainProcessor.from_config({"image_size": 32})(image).shape == (3, 32, 32)


def test_native_decoder_messages_fold_into_one_error(tmp_path, capfd):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"bad.mp4 with decord: .*\(.*Invalid data found when processing input\)"):
        load_video(tmp_path / "bad.mp4", 4, 32, 32)
    with pytest.raises(VideoDecodeError, match=r"empty \(0 bytes\)"):
        load_video(tmp_path / "empty.mp4", 4, 32, 32)
    assert "ERROR opening" not in capfd.readouterr().err  # no second, raw line from decord's C++ logger


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory):
    """An AAC file with no video stream, as a user's soundtrack or voice memo would be."""
    import av

    path = tmp_path_factory.mktemp("audio") / "voice.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_a_file_without_a_video_stream_gets_one_message_from_every_reader(audio_only):
    """decord fails on such a file with an internal check ('st_nb >= 0'); every reader says what it is."""
    from video_llama.processors.frame_stream import check_source
    from video_llama.processors.video_decoding import probe_video

    readers = [lambda: load_video(audio_only, 4, 32, 32, backend="decord"), lambda: probe_video(audio_only, "decord"),
               lambda: load_video(audio_only, 4, 32, 32, backend="pyav"), lambda: probe_video(audio_only, "pyav"),
               lambda: load_video(audio_only.read_bytes(), 4, 32, 32, backend="decord"), lambda: check_source(audio_only)]
    for read in readers:
        with pytest.raises(VideoDecodeError) as caught:
            read()
        assert "holds no video stream (an audio-only file?)" in str(caught.value) and "st_nb" not in str(caught.value)
    from video_llama.data_tools.action_folders import probe

    frames, why = probe(audio_only)  # `prepare` lists it as unreadable, with the same reason
    assert frames == 0 and "holds no video stream (an audio-only file?)" in why


def test_still_suppression_takes_the_background_away_and_keeps_what_moves():
    """The same moving square over two different still backgrounds: with still_suppression 1 the
    model input is nearly the same; with 0.8 the backgrounds still differ a fifth as much."""
    proc = {share: AlproVideoEvalProcessor.from_config({"n_frms": 4, "image_size": 16, "per_clip_norm": True,
                                                         "still_suppression": share}) for share in (0.0, 0.8, 1.0)}
    rng = np.random.default_rng(0)
    clips = []
    for _ in range(2):
        frames = np.repeat(rng.integers(0, 200, (1, 16, 16, 3), dtype=np.uint8), 4, axis=0)  # a textured still scene
        for t in range(4):
            frames[t, 6:10, 2 + 3 * t:6 + 3 * t] = 255  # a square moving right
        clips.append(torch.from_numpy(frames).permute(3, 0, 1, 2))  # (C, T, H, W), as the decoders give them
    differ = {share: (p.transform(clips[0]) - p.transform(clips[1])).abs().mean().item() for share, p in proc.items()}
    assert differ[1.0] < 0.2 * differ[0.0] and differ[1.0] < differ[0.8] < differ[0.0], differ
    with pytest.raises(ValueError, match=r"still_suppression must be a share in \[0, 1\]"):
        AlproVideoEvalProcessor.from_config({"still_suppression": 1.5})


def test_motion_channels_show_where_the_object_left_and_where_it_arrived():
    """A square stepping right over a flat scene: the second channel of frame t is the grey change
    since frame t-1 (bright where it arrived, dark where it left), the third the change to t+1, and
    both are zero at the window's ends."""
    proc = AlproVideoEvalProcessor.from_config({"n_frms": 4, "image_size": 16, "motion_channels": True})
    frames = np.full((4, 16, 16, 3), 60, dtype=np.uint8)
    for t in range(4):
        frames[t, 6:10, 2 + 3 * t:6 + 3 * t] = 240
    out = motion_image(torch.from_numpy(frames).permute(3, 0, 1, 2))
    assert out.shape == (3, 4, 16, 16)
    grey, since, to_next = out
    step = (240 - 60) / 255
    assert torch.allclose(grey[1, 7, 5], torch.tensor(240 / 255)) and torch.allclose(grey[1, 7, 0], torch.tensor(60 / 255))
    assert torch.allclose(since[1, 7, 8], torch.tensor(step)) and torch.allclose(since[1, 7, 2], torch.tensor(-step))
    assert torch.equal(since[0], torch.zeros(16, 16)) and torch.equal(to_next[3], torch.zeros(16, 16))
    assert torch.equal(to_next[:3], since[1:])
    assert proc.transform(torch.from_numpy(frames).permute(3, 0, 1, 2)).shape == (3, 4, 16, 16)
