"""``video-llama cache-features``: run a training YAML's frozen ViT and image Q-Former once over its
training clips and keep their outputs, so that training reads them instead of decoding and
encoding pixels every epoch (``datasets.<name>.feature_cache: OUT``).

    video-llama cache-features --cfg-path MY.yaml --out output/features [--views 4]

One view (the default) uses the evaluation processor: exactly what training with that processor
computes from pixels. ``--views K`` runs the training processor K times a clip (its random frames
and crop); training draws one view per visit. The model's ViT and image Q-Former must be frozen,
and a run refuses a cache made with other encoders.
"""

import argparse

from video_llama.jobs.feature_cache import write_feature_cache


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama cache-features", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg-path", required=True, help="the training YAML (its first dataset's train split)")
    parser.add_argument("--out", required=True, help="the cache folder (then: datasets.<name>.feature_cache=OUT)")
    parser.add_argument("--views", type=int, default=1, help="views a clip: 1 = the eval processor (exact), K = the train processor K times")
    parser.add_argument("--options", nargs="+", default=[], help="overrides, key=value")
    parser.add_argument("--plugins", nargs="+", default=[], help="modules or .py files that register builders etc.")
    args = parser.parse_args(argv)
    import video_llama  # noqa: F401  (registers the built-ins)
    from video_llama.common.logger import setup_logger

    setup_logger()
    made = write_feature_cache(args.cfg_path, args.out, args.views, args.options, args.plugins)
    print(f"{len(made['clips'])} clips × {made['views']} view(s) in {args.out} ({len(made['skipped'])} skipped); "
          f"train with --options datasets.<name>.feature_cache={args.out}")
    return 0
