"""``video-llama synth --out DIR``: a synthetic action dataset (classes differ only in motion)."""

import argparse


def main(argv=None):
    from video_llama.cli.synthetic import MOTIONS, write_synthetic_dataset

    parser = argparse.ArgumentParser(prog="video-llama synth", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--classes", type=int, default=4, help=f"2-{len(MOTIONS)}: {', '.join(MOTIONS)}")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wrap", action="store_true",
                        help="the scene wraps at its edges, so no single frame hints at the class (harder)")
    args = parser.parse_args(argv)
    names = write_synthetic_dataset(args.out, args.classes, args.per_class, args.seed, wrap=args.wrap)
    print(f"wrote {args.per_class} clips for each of {names} under {args.out}")
    return 0
