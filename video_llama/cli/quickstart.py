"""``make quickstart``: synthetic action clips → prepare → finetune a tiny Video-LLaMA on CPU →
accuracy on the held-out split, in both evaluation modes.

Every step is one of the project's own commands, so the same path works on a real folder.
"""

import json
import time
from pathlib import Path

from video_llama.common.config import PACKAGE_DIR

ROOT = Path("output/quickstart")
TINY_LLM = Path("output/tiny-llm")
TRAIN_CONFIG = "train_configs/quickstart_action_tiny.yaml"
EVAL_CONFIG = "eval_configs/quickstart_action_tiny.yaml"
QUESTIONS = PACKAGE_DIR / "prompts" / "action_question_guide.txt"  # one question: see the file
PER_CLASS = 375  # 300 training, 37 validation and 38 test clips per class (the 80/10/10 split)


def main(argv=None):
    from video_llama.cli.tiny_llm import write_tiny_llm
    from video_llama.cli.jobs import evaluate, train
    from video_llama.cli.action_folders import prepare
    from video_llama.cli.synthetic import write_synthetic_dataset

    start = time.monotonic()
    if not (TINY_LLM / "config.json").is_file():
        write_tiny_llm(TINY_LLM)
    print(f"[1/5] tiny LLM: {TINY_LLM}")
    videos = ROOT / "videos"
    if not videos.is_dir():
        write_synthetic_dataset(videos, classes=4, per_class=PER_CLASS, seed=0)
    print(f"[2/5] synthetic clips (4 motion classes): {videos}")
    report, labels = prepare(videos, ROOT / "annotations", seed=0, n_frms=8, questions_file=QUESTIONS)
    print(report.table(labels))
    print(f"[3/5] annotations: {ROOT / 'annotations'}")
    summary = train(["--cfg-path", TRAIN_CONFIG])
    print(f"[4/5] trained {summary['steps']} iterations: final loss {summary['final_loss']:.4f}; "
          f"best checkpoint {summary['best_checkpoint']} in {summary['run_dir']}")
    results = {}
    for mode in ("rank", "generate"):
        results[mode] = evaluate(["--cfg-path", EVAL_CONFIG, "--options", f"model.ckpt={summary['run_dir']}",
                                  f"run.eval_mode={mode}"])
    elapsed = time.monotonic() - start
    print(f"[5/5] held-out accuracy after {elapsed / 60:.1f} min:")
    for mode, result in results.items():
        eval_dir = Path(result["run_dir"]) / "eval_test" / "webvid_instruct_test"
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        print(f"  {mode:<8} top-1 {metrics['top1']:.3f} ({metrics['correct']}/{metrics['n']}, chance "
              f"{1 / len(metrics['labels']):.2f}); confusion matrix: {eval_dir / 'confusion_matrix.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
