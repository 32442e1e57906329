"""``video-llama check-data (--anno F|DIR --videos-dir D | --folder D) --out REPORT.json``: probe
every clip with the decoders training uses, before a long run.

Prints a line per problem and a summary (clips checked, files per second); writes the JSON report
and ``quarantine.txt`` beside it, which ``build_info.quarantine`` and ``export-shards
--quarantine`` take. Exit status 0 whatever it finds: the report is the result.
"""

import argparse

from video_llama.common.errors import UserError
from video_llama.data_tools.check_data import check_data, write_report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama check-data", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--anno", help="annotation JSON, or a folder written by `video-llama prepare` (all splits)")
    source.add_argument("--folder", help="a folder of videos (searched recursively), before `prepare`")
    parser.add_argument("--videos-dir", help="folder the annotations' video paths are relative to")
    parser.add_argument("--out", required=True, help="the JSON report; quarantine.txt is written beside it")
    parser.add_argument("--n-frms", type=int, default=8, help="frames the model samples: shorter clips are reported")
    parser.add_argument("--workers", type=int, default=2, help="clips checked in parallel (processes)")
    parser.add_argument("--backend", choices=("decord", "pyav"), default="decord", help="the decoder training uses")
    parser.add_argument("--decode-timeout-s", type=float, default=10.0,
                        help="seconds a clip may take (more over 64 MiB), as training's decode_timeout_s; 0: no limit")
    args = parser.parse_args(argv)
    if args.anno and not args.videos_dir:
        parser.error("--anno needs --videos-dir (where the annotations' video paths are)")
    if args.workers < 1 or args.n_frms < 1:
        raise UserError("--workers and --n-frms must be at least 1")
    report = check_data(args.anno, args.videos_dir, args.folder, args.n_frms, args.workers, args.backend,
                        decode_timeout_s=args.decode_timeout_s)
    for problem in report["problems"]:
        print(f"{problem['problem']}: {problem['video']}: {problem['detail']}")
    for note in report["notes"]:
        print(f"note, {note['note']}: {note['video']}: {note['detail']}")
    for videos in report["duplicates"]:
        print(f"same bytes: {', '.join(videos)}")
    for labels in report["colliding_labels"]:
        print(f"labels that read the same: {', '.join(labels)}")
    quarantine = write_report(report, args.out)
    counts = ", ".join(f"{n} {kind}" for kind, n in report["counts"].items()) or "no problems"
    print(f"checked {report['checked']} clips in {report['seconds']:.1f} s ({report['files_per_s']:.1f} files/s, "
          f"{report['workers']} workers): {counts}; {len(report['duplicates'])} group(s) of duplicates"
          + "".join(f"; {n} {note} (a note)" for note, n in report["note_counts"].items()))
    print(f"wrote {args.out} and {quarantine} ({len(report['quarantine'])} clips; set build_info.quarantine to it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
