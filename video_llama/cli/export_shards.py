"""``video-llama export-shards --anno F|DIR --videos-dir D --out DIR``: annotations + video files →
WebDataset tar shards, for clusters where reading millions of small files starves the GPUs.

The work, and what the shards hold, is :func:`video_llama.data_tools.shards.export_shards`; this is its argument parser."""

import argparse

from video_llama.common.errors import UserError
from video_llama.data_tools.shards import export_shards


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama export-shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--anno", required=True, help="annotation JSON, or a folder written by `video-llama prepare`")
    parser.add_argument("--videos-dir", required=True, help="folder the annotations' video paths are relative to")
    parser.add_argument("--out", required=True, help="folder for the shards and index.json")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--shard-size", type=float, metavar="MB",
                        help="instead of a count: consecutive clips whose source files add up to about MB "
                             "(with --reencode the shards come out smaller by the re-encode's ratio)")
    parser.add_argument("--reencode", metavar="SIZE[@FPS]", help="store clips re-encoded to SIZE x SIZE (at FPS), e.g. 224@8")
    parser.add_argument("--frames", type=int, metavar="N",
                        help="store N uniformly sampled frames per clip as JPEGs instead of a video (at --reencode SIZE, default 224)")
    parser.add_argument("--workers", type=int, default=1, help="shards written in parallel")
    parser.add_argument("--quarantine", help="`video-llama check-data`'s quarantine.txt (or report): clips left out")
    parser.add_argument("--overwrite", action="store_true",
                        help="--out holds shards of an export with other settings: delete them first (else refused)")
    args = parser.parse_args(argv)
    if args.samples_per_shard < 1 or args.workers < 1 or (args.shard_size is not None and args.shard_size <= 0):
        raise UserError("--samples-per-shard and --workers must be at least 1, --shard-size positive")
    index = export_shards(args.anno, args.videos_dir, args.out, args.samples_per_shard, args.shard_size,
                          args.reencode, args.workers, frames=args.frames, overwrite=args.overwrite,
                          quarantine=args.quarantine)
    for item in index["left_out"]:
        print(f"left out ({item['split']}): {item['video']}: {item['why']}")
    for split, entry in index["splits"].items():
        print(f"{split}: {entry['total']} samples in {len(entry['shards'])} shard(s)")
    print(f"wrote {args.out}/index.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
