"""``video-llama config --cfg-path X.yaml [--options k=v ...]``: validate and print the result."""

import argparse
import sys

from video_llama.common.config import Config, ConfigError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama config", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg-path", required=True)
    parser.add_argument("--options", nargs="+", default=[], help="overrides, key=value")
    parser.add_argument("--plugins", nargs="+", default=[], help="modules or .py files that register builders etc.")
    args = parser.parse_args(argv)
    import video_llama  # noqa: F401  (registers the built-ins)

    try:
        config = Config(args)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    print(config.to_yaml())
    return 0
