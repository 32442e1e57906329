"""``video-llama tiny-llm``: write a tiny random-weight LLaMA and its tokenizer
(``video_llama.data_tools.tiny_llm``)."""

import argparse

from video_llama.data_tools.tiny_llm import write_tiny_llm


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama tiny-llm", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write (created if missing)")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_tiny_llm(args.out_dir, args.hidden_size, args.layers, args.heads, 2 * args.hidden_size, args.seed)
    print(f"tiny LLM written to {out} (use it as model.llama_model and the dataset's tokenizer_name)")


if __name__ == "__main__":
    raise SystemExit(main())
