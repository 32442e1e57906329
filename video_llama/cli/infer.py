"""``video-llama infer --cfg-path F (--anno F|DIR | --folder D) --out F.jsonl``: answer one question
per video, without a UI.

Each line of the output: ``video``, ``question``, ``answer``, ``seconds`` (the batch's time shared
among its clips), for annotations the ``reference`` answer, and a ``warning`` (also logged) for a
clip with fewer frames than the model samples, whose answer may be unreliable; a clip that cannot
be decoded gets a line with ``error`` instead and is skipped. Greedy answers, asked exactly as the chat asks
(the timestamp sentence before the question when the model learned with it), ``--batch-size``
clips per generate call. A re-run skips the videos the output already has, so a stopped run
continues where it stopped. A model with the audio branch hears each clip's soundtrack, or with
``--audio-dir`` the file there named as the video (``clip.mp4`` → ``clip.wav``, ``.flac``, ...);
each line then has ``sound``: whether it was heard.
"""

import argparse
import logging
from pathlib import Path

from video_llama.common.errors import UserError
from video_llama.conversation import GUIDE_QUESTION
from video_llama.data_tools.shards import split_files
from video_llama.datasets.datasets.base_video_dataset import video_path
from video_llama.datasets.datasets.video_instruct_dataset import read_instruct_annotations
from video_llama.jobs.chat import load_setup
from video_llama.jobs.experiment import add_config_arguments, experiment
from video_llama.jobs.infer import infer
from video_llama.processors.video_decoding import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)


def folder_videos(folder):
    """Every video file under ``folder`` (recursively), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--folder {folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


SOUND_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")


def sound_files(audio_dir, videos):
    """{video: the file of ``audio_dir`` named as it, with a sound extension}; a video without one
    is heard from its own soundtrack (logged). Two videos of one name would share a file: refused."""
    names = {}
    for video in videos:
        names.setdefault(Path(video).stem, []).append(video)
    shared = [paths for paths in names.values() if len(paths) > 1]
    if shared:
        raise UserError(f"--audio-dir finds a video's sound by its name, and {len(shared)} names are shared, e.g. "
                        f"{shared[0][:3]}; give videos of distinct names or leave out --audio-dir")
    found = {}
    for video in videos:
        candidates = [Path(audio_dir) / (Path(video).stem + extension) for extension in SOUND_EXTENSIONS]
        found[video] = next((str(c) for c in candidates if c.is_file()), None)
    missing = [video for video, path in found.items() if path is None]
    if missing:
        logger.warning("--audio-dir %s has no sound file for %d video(s), heard from their own soundtrack: %s",
                       audio_dir, len(missing), missing[:5])
    return {video: path for video, path in found.items() if path is not None}


def jobs_from_args(args):
    """[(video path, question, reference answer or None)] in a fixed order."""
    if args.folder:
        return [(str(path), args.question or GUIDE_QUESTION, None) for path in folder_videos(args.folder)]
    jobs = []
    for files in split_files(args.anno).values():
        for record in read_instruct_annotations(files):
            first = record["QA"][0]
            jobs.append((str(video_path(record, args.videos_dir)), args.question or first["q"],
                         None if args.question else first["a"]))
    return jobs


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama infer", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, "evaluation YAML (as demo.py takes)", trained=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--anno", help="annotation JSON, or a folder written by `video-llama prepare` (all its splits)")
    source.add_argument("--folder", help="a folder of videos (searched recursively)")
    parser.add_argument("--videos-dir", help="folder the annotations' video paths are relative to")
    parser.add_argument("--question", help=f"ask this of every video (default: each record's first question; "
                                           f"for --folder {GUIDE_QUESTION!r})")
    parser.add_argument("--out", required=True, help="JSONL file (appended to: a re-run skips the videos it has)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the config's run.device)")
    parser.add_argument("--audio-dir", help="a model with the audio branch hears the file here named as each video "
                                            f"({', '.join(SOUND_EXTENSIONS)}) instead of its soundtrack")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise UserError("--batch-size and --max-new-tokens must be at least 1")
    if args.audio_dir and not Path(args.audio_dir).is_dir():
        raise UserError(f"--audio-dir {args.audio_dir} is not a folder")
    jobs = jobs_from_args(args)
    if not jobs:
        raise UserError(f"no videos in {args.folder or args.anno}")
    setup = load_setup(*experiment(args), args.device, args.plugins)
    if args.audio_dir and setup.sound_processor is None:
        raise UserError(f"--audio-dir {args.audio_dir}: this model has no audio branch (model.equip_audio_branch) to hear it")
    sounds = sound_files(args.audio_dir, [video for video, _, _ in jobs]) if args.audio_dir else {}
    answered, failed, skipped = infer(setup, jobs, args.out, args.batch_size, args.max_new_tokens, sounds=sounds)
    print(f"{answered} answered, {failed} could not be decoded (lines with \"error\"), {skipped} already in {args.out}")
    return 0
