"""``video-llama <subcommand>``: each subcommand lives in its own module with its own ``main``."""

import importlib
import sys

SUBCOMMANDS = {
    "synth": ("video_llama.cli.synth", "write synthetic action clips (motion or context classes) or a continuous recording with its timeline"),
    "prepare": ("video_llama.cli.prepare", "folder of labelled videos -> instruction annotation JSON"),
    "check-data": ("video_llama.cli.check_data", "probe every clip with training's decoders -> report.json + quarantine.txt"),
    "export-shards": ("video_llama.cli.export_shards", "annotations + videos -> WebDataset tar shards (train.py reads them: build_info.shards)"),
    "cache-features": ("video_llama.cli.cache_features", "run the frozen ViT and image Q-Former once over the training clips -> a feature cache training reads"),
    "calibrate": ("video_llama.cli.calibrate", "fit a run's temperature (and abstention threshold) on a held-out split -> RUN/calibration.json"),
    "infer": ("video_llama.cli.infer", "answer a question about every video of an annotation file or folder -> JSONL"),
    "merge-lora": ("video_llama.cli.merge_lora", "fold a LoRA run's adapters into its LLM (a plain model, no peft)"),
    "select-mode": ("video_llama.cli.select_mode", "watch a video or stream and decide the robot mode, window by window -> JSONL"),
    "tiny-llm": ("video_llama.cli.tiny_llm", "write a tiny random-weight LLaMA + tokenizer for CPU runs"),
    "plan": ("video_llama.cli.plan", "the GPU memory and FLOPs of one training step of a YAML, simulated (no GPU, no weights)"),
    "config": ("video_llama.cli.show_config", "validate an experiment YAML and print the resolved config"),
    "list": ("video_llama.cli.list_registered", "list every registered name per kind"),
}


def usage():
    lines = ["usage: video-llama <subcommand> [args]", "", "subcommands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        from video_llama.common.registry import closest

        guess = closest(name, SUBCOMMANDS)
        print(f"video-llama: unknown subcommand {name!r}" + (f"; did you mean {guess!r}?" if guess else ""), file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    from video_llama.cli import run_cli

    module = importlib.import_module(SUBCOMMANDS[name][0])
    return run_cli(lambda: module.main(rest)) or 0


if __name__ == "__main__":
    sys.exit(main())
