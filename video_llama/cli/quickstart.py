"""``make quickstart``: the main job on the embedded default (tiny model, CPU)."""

from pathlib import Path

OUTPUT = Path("output")
TINY_LLM = OUTPUT / "tiny-llm"
CONFIG = Path("train_configs/tiny_cpu_finetune.yaml")


def main(argv=None):
    import video_llama  # noqa: F401
    from video_llama.cli.tiny_llm import write_tiny_llm
    from video_llama.common.config import Config

    if not (TINY_LLM / "config.json").is_file():
        write_tiny_llm(TINY_LLM)
    print(f"[1/2] tiny LLM: {TINY_LLM}")
    config = Config.from_file(CONFIG)
    print(f"[2/2] {CONFIG} validated: model {config.model_cfg.arch}/{config.model_cfg.model_type}, "
          f"datasets {list(config.datasets_cfg)}, task {config.run_cfg.task}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
