"""``video-llama synth``: synthetic action clips in class folders, or one continuous recording.

    video-llama synth --out DIR [--classes 4] [--wrap]    motion classes (they differ only in motion)
    video-llama synth --out DIR --context                 the five context classes and DIR/modes.yaml
    video-llama synth --stream REC.mp4 [--segments 12]    a recording of context actions and REC.timeline.json
"""

import argparse

from video_llama.data_tools import synthetic


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama synth", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="folder to write class folders of clips into")
    target.add_argument("--stream", metavar="VIDEO",
                        help="write one continuous video of context actions, and its timeline beside it")
    parser.add_argument("--context", action="store_true",
                        help=f"with --out: the context classes ({', '.join(synthetic.CONTEXT_CLASSES)}), "
                             f"whose meaning depends on where the motion happens, and OUT/{synthetic.CONTEXT_LABEL_MAP} "
                             "(class folder → robot mode, for prepare --label-map)")
    parser.add_argument("--classes", type=int, help=f"motion classes, 2-{len(synthetic.MOTIONS)} (default 4): "
                                                    f"{', '.join(synthetic.MOTIONS)}")
    parser.add_argument("--wrap", action="store_true",
                        help="motion classes: the scene wraps at its edges, so no single frame hints at the class (harder)")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--segments", type=int, help="with --stream: how many actions, 4-7 s each (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=int, default=8)
    args = parser.parse_args(argv)
    if (args.context or args.stream) and (args.classes is not None or args.wrap):
        parser.error("--classes and --wrap choose motion classes; --context and --stream use the context classes")
    if args.segments is not None and not args.stream:
        parser.error("--segments goes with --stream")

    if args.stream:
        timeline = synthetic.write_recording(args.stream, 12 if args.segments is None else args.segments, args.seed, args.fps)
        print(f"wrote {args.stream} ({len(timeline['segments'])} segments, {timeline['duration']:.1f} s at "
              f"{args.fps} fps) and its timeline {synthetic.timeline_path(args.stream)}")
    elif args.context:
        names = synthetic.write_context_dataset(args.out, args.per_class, args.seed, args.fps)
        print(f"wrote {args.per_class} clips for each of {names} under {args.out}, and the label map "
              f"{args.out}/{synthetic.CONTEXT_LABEL_MAP} (use it with prepare --label-map)")
    else:
        names = synthetic.write_synthetic_dataset(args.out, args.classes or 4, args.per_class, args.seed, args.fps,
                                                  args.wrap)
        print(f"wrote {args.per_class} clips for each of {names} under {args.out}")
    return 0
