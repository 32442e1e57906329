"""``video-llama list``: every registered name per kind, with where it comes from."""

import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama list", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugins", nargs="+", default=[], help="also load these modules or .py files")
    args = parser.parse_args(argv)
    import video_llama  # noqa: F401  (registers the built-ins)
    from video_llama.common.plugins import load_plugins
    from video_llama.common.registry import registry

    load_plugins(args.plugins)

    for kind, label in registry.KINDS.items():
        print(f"{label}s:")
        for name in registry.names(kind):
            print(f"  {name:<28} {registry.origin[kind].get(name, 'built-in')}")
    return 0
