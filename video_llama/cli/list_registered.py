"""``video-llama list``: every registered name per kind, with where it comes from."""

import argparse


def main(argv=None):
    argparse.ArgumentParser(prog="video-llama list", description=__doc__.splitlines()[0]).parse_args(argv)
    import video_llama  # noqa: F401  (registers the built-ins)
    from video_llama.common.registry import registry

    for kind, label in registry.KINDS.items():
        print(f"{label}s:")
        for name in sorted(registry.mapping[kind]):
            print(f"  {name:<28} {registry.origin[kind].get(name, 'built-in')}")
    return 0
