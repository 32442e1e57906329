"""``video-llama prepare --root DIR --out DIR``: a folder of labelled videos → instruction JSON.

Reads ``root/<label>/<video>`` (avi, mp4, mkv, webm, mov; nested folders allowed; with ``--images``
jpg, png, webp, bmp for the ``image_instruct`` builder), probes every file, and writes ``OUT/train.json``, ``OUT/val.json``, ``OUT/test.json`` (video paths relative to
--root) and ``OUT/labels.json``, printing a summary per label.
"""

import argparse
import logging

from video_llama.data_tools.action_folders import prepare


def parse_ratios(text):
    ratios = [float(x) for x in text.split(",")]
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"--split wants three ratios summing to 1 (train,val,test), got {text}")
    return ratios


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder with one sub-folder per label")
    parser.add_argument("--out", required=True, help="where the annotation JSON files go")
    parser.add_argument("--label-map", help="YAML/JSON mapping folder name → answer (e.g. wave: greet_mode)")
    parser.add_argument("--questions", help="file of question paraphrases, one per line (default: prompts/action_questions.txt)")
    parser.add_argument("--all-questions", action="store_true", help="one entry per question instead of one random question per video")
    parser.add_argument("--split", type=parse_ratios, default=[0.8, 0.1, 0.1], help="train,val,test ratios (default 0.8,0.1,0.1)")
    parser.add_argument("--split-list", help="JSON {train: [paths], val: [...], test: [...]} to use instead of a random split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-frms", type=int, default=8, help="frames the model samples; shorter clips are left out")
    parser.add_argument("--keep-short", action="store_true", help="keep clips shorter than --n-frms (frames repeat)")
    parser.add_argument("--loop-short", action="store_true", help="write looped copies of short clips (under root/_looped)")
    parser.add_argument("--images", action="store_true",
                        help="the folders hold images (jpg, png, webp, bmp): entries {'image': ..., 'QA'} for image_instruct")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")


    report, labels = prepare(args.root, args.out, args.label_map, args.questions, args.split, args.seed, args.n_frms,
                             args.keep_short, args.loop_short, args.all_questions, args.split_list, args.images)
    for rel, error in report.unreadable:
        print(f"left out (cannot decode): {rel}: {error}")
    for rel, frames in report.short:
        print(f"left out (only {frames} frames < --n-frms {args.n_frms}; --keep-short or --loop-short keeps it): {rel}")
    print(report.table(labels))
    builder = "image_instruct" if args.images else "webvid_instruct"
    print(f"wrote {args.out}/train.json, val.json, test.json and labels.json; for {builder} set videos_dir to {args.root}")
    return 0
