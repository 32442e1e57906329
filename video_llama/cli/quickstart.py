"""``make quickstart``: synthetic action clips → prepare → finetune a tiny Video-LLaMA on CPU.

Every step is one of the project's own commands, so the same path works on a real folder.
"""

import time
from pathlib import Path

ROOT = Path("output/quickstart")
TINY_LLM = Path("output/tiny-llm")
CONFIG = Path("train_configs/quickstart_action_tiny.yaml")


def main(argv=None):
    from video_llama.cli.tiny_llm import write_tiny_llm
    from video_llama.common.train_job import main as train
    from video_llama.datasets.action_folders import prepare
    from video_llama.datasets.synthetic import write_synthetic_dataset

    start = time.monotonic()
    if not (TINY_LLM / "config.json").is_file():
        write_tiny_llm(TINY_LLM)
    print(f"[1/4] tiny LLM: {TINY_LLM}")
    videos = ROOT / "videos"
    if not videos.is_dir():
        write_synthetic_dataset(videos, classes=4, per_class=40, seed=0)
    print(f"[2/4] synthetic clips (4 motion classes): {videos}")
    report, labels = prepare(videos, ROOT / "annotations", seed=0, n_frms=8)
    print(report.table(labels))
    print(f"[3/4] annotations: {ROOT / 'annotations'}")
    summary = train(["--cfg-path", str(CONFIG)])
    print(f"[4/4] trained {summary['steps']} iterations in {time.monotonic() - start:.0f} s: final loss "
          f"{summary['final_loss']:.4f}; checkpoint {summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
