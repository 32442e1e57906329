"""Held-out top-1 against clips per class, for the clip recipe and the stream recipe: what to
expect from a folder of few videos.

For each count N of ``--per-class`` it writes N training clips per class of the context classes
(``video-llama synth --context``, seed 0), 10 validation clips per class (seed 1) and a fixed test
set of ``--test-per-class`` clips per class (seed 2, the same for every N), trains each recipe for
``--epochs`` epochs from the same tiny LLM, and evaluates the best checkpoint on the test set in
rank mode. The stream recipe is evaluated on 2 s windows of the test clips (its eval config), the
clip recipe on whole clips.

    .venv/bin/python benchmarks/learning_curve.py --per-class 10 20 50 100 300 [--epochs 20] [--work output/curve] \
        [--options run.iters_per_epoch=200 ...]

Prints a markdown table (recipe, N, training iterations, minutes, held-out top-1, chance) and writes
it to WORK/learning_curve.md. It trains 2 x len(--per-class) models: about an hour on 2 CPU cores
for the default counts.
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RECIPES = {"clip": ("train_configs/quickstart_action_tiny.yaml", "eval_configs/quickstart_action_tiny.yaml"),
           "stream": ("train_configs/quickstart_stream_tiny.yaml", "eval_configs/quickstart_stream_tiny.yaml")}


def annotations(videos, out):
    """The guide's annotation JSON of every clip under ``videos`` (its folders are the classes)."""
    from video_llama.data_tools.action_folders import readable_label
    from video_llama.conversation import GUIDE_QUESTION

    records = [{"video": str(path.relative_to(videos.parent)), "QA": [{"q": GUIDE_QUESTION, "a": readable_label(path.parent.name)}]}
               for path in sorted(videos.glob("*/*")) if path.suffix in (".mp4", ".avi")]
    out.write_text(json.dumps(records))
    return out


def write_split(work, name, per_class, seed):
    from video_llama.data_tools.synthetic import write_context_dataset

    videos = work / name
    if not (videos / "modes.yaml").is_file():
        write_context_dataset(videos, per_class=per_class, seed=seed)
    return annotations(videos, work / f"{name}.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 20, 50, 100, 300])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--work", default="output/curve")
    parser.add_argument("--llm", default="output/tiny-llm")
    parser.add_argument("--options", nargs="+", default=[], help="more training overrides, e.g. run.iters_per_epoch=200")
    args = parser.parse_args()

    from video_llama.jobs.experiment import evaluate, train
    from video_llama.data_tools.synthetic import CONTEXT_CLASSES
    from video_llama.data_tools.tiny_llm import write_tiny_llm

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (Path(args.llm) / "config.json").is_file():
        write_tiny_llm(args.llm)
    test = write_split(work, "test", args.test_per_class, seed=2)
    val = write_split(work, "val", 10, seed=1)
    rows = ["| recipe | clips per class | iterations | minutes | held-out top-1 | chance |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for n in args.per_class:
        train_anno = write_split(work, f"train_{n}", n, seed=0)
        for recipe in args.recipes:
            train_cfg, eval_cfg = RECIPES[recipe]
            paths = [f"datasets.webvid_instruct.build_info.videos_dir={work}", f"model.llama_model={args.llm}",
                     f"datasets.webvid_instruct.tokenizer_name={args.llm}"]
            started = time.monotonic()
            summary = train(["--cfg-path", str(REPO / train_cfg), "--options", *paths, f"run.max_epoch={args.epochs}",
                             f"run.output_dir={work / 'runs' / f'{recipe}_{n}'}",
                             f"datasets.webvid_instruct.build_info.anno_dir={{train: {train_anno}, val: {val}}}",
                             *args.options])
            result = evaluate(["--cfg-path", str(REPO / eval_cfg), "--options", *paths, f"model.ckpt={summary['run_dir']}",
                               f"run.output_dir={work / 'eval' / f'{recipe}_{n}'}", "run.eval_mode=rank",
                               f"datasets.webvid_instruct.build_info.anno_dir={{test: {test}}}"])
            rows.append(f"| {recipe} | {n} | {summary['steps']} | {(time.monotonic() - started) / 60:.1f} | "
                        f"{result['test_top1']:.3f} | {1 / len(CONTEXT_CLASSES):.2f} |")
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    (work / "learning_curve.md").write_text(table + "\n")
    print(f"\n{table}\n\nwritten: {work / 'learning_curve.md'}")


if __name__ == "__main__":
    main()
