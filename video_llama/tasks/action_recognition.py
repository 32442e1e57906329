"""Action recognition: how often the model names the right action for a held-out clip.

Two ways to ask (``run.eval_mode``):

* ``rank``: score every label by the model's log-likelihood of answering it (the answer tokens
  and the end symbol, summed; ``run.length_norm``: averaged) and take the best; no generation,
  so no unmatched answers.
* ``generate``: the model answers freely (greedy); the answer is normalised and matched to the
  label set; an answer that matches no label counts as wrong and is listed.

Outputs under the evaluation folder: ``metrics.json`` (``top1``, ``per_class``, ``n``, ...),
``confusion_matrix.json`` and ``.png``, and ``predictions.jsonl`` with every prediction.
"""

import json
import logging
from pathlib import Path

from video_llama.common import dist_utils
from video_llama.common.errors import UserError
from video_llama.common.registry import registry
from video_llama.common.run_folder import RunFolder
from video_llama.conversation.answers import match_answer
from video_llama.conversation.collate import sound_groups
from video_llama.datasets.datasets.base_video_dataset import TooManyBadVideos
from video_llama.datasets.datasets.shard_dataset import ShardDataset
from video_llama.processors.pixel_plan import batch_to_device
from video_llama.tasks.base_task import BaseTask
from video_llama.tasks.calibration import decision_settings, nll

logger = logging.getLogger(__name__)


def _labels_beside(anno):
    """The labels of the labels.json that `prepare` wrote beside (or, for a folder, inside) ``anno``."""
    anno = Path(anno)
    labels_file = anno / "labels.json" if anno.is_dir() else anno.parent / "labels.json"
    return list(json.loads(labels_file.read_text())["labels"]) if labels_file.is_file() else None


def trained_labels(ckpt):
    """The label set of the run that wrote ``ckpt`` (a run or checkpoint folder of ours): the
    labels.json it keeps, else its run.labels, else the labels.json of its training annotations.
    None when it cannot tell."""
    from omegaconf import DictConfig, ListConfig

    run = RunFolder.of(ckpt)
    labels = run.labels() if run is not None else None
    if labels:
        return labels
    config = run.config(ckpt) if run else None  # runs from before the run folder kept its labels
    if config is None:
        return None
    if config.get("run", {}).get("labels"):
        return list(config.run.labels)
    for ds in (config.get("datasets") or {}).values():
        anno = (ds.get("build_info") or {}).get("anno_dir")
        train = anno.get("train") if isinstance(anno, DictConfig) else anno
        for path in ([train] if isinstance(train, str) else list(train) if isinstance(train, ListConfig) else []):
            labels = _labels_beside(path)
            if labels:
                return labels
    return None


def label_set(run_cfg, anno_files, records, ckpt=None):
    """Labels from run.labels, else the trained run's (``ckpt``), else the labels.json beside the
    evaluated annotations, else the distinct answers. The trained run and the test side disagreeing
    is reported: the model can only name what it was trained on. ``records``: a callable giving the
    records, called only for the last fallback (shards are read through for it)."""
    if run_cfg.get("labels"):
        return list(run_cfg.labels)
    beside = next((labels for labels in map(_labels_beside, anno_files) if labels), None)
    trained = trained_labels(ckpt)
    if trained and beside and sorted(trained) != sorted(beside):
        logger.warning("the trained run's labels %s differ from the labels.json of the evaluated data %s; "
                       "scoring with the trained run's (set run.labels to choose; is build_info.anno_dir the data "
                       "you meant? `--run RUN` alone uses the run's own)", trained, beside)
    return trained or beside or sorted({record["QA"][0]["a"] for record in records()})


# ---------------------------------------------------------------------------- metrics and files


def compute_metrics(predictions, labels, unreadable=(), temperature=1.0, threshold=None, unknown="unknown"):
    """top-1, per-class accuracy and the confusion matrix (rows: truth, columns: prediction).

    Clips whose true answer is none of ``labels`` cannot be predicted: they are left out of top-1
    and listed (``outside_label_set``), as are clips that could not be decoded (``unreadable``).
    In rank mode the label scores also give calibrated probabilities (``temperature``) and, with a
    ``threshold``, decisions that abstain (``unknown``) below it: ``abstention`` reports the
    coverage and the accuracy on the decided clips; top-1 stays that of deciding every clip.
    """
    index = {label: i for i, label in enumerate(labels)}
    outside = [p["video"] for p in predictions if p["label"] not in index]
    predictions = [p for p in predictions if p["label"] in index]
    columns = labels + ["(unmatched)"]
    matrix = [[0] * len(columns) for _ in labels]
    for p in predictions:
        if p["label"] in index:
            matrix[index[p["label"]]][index.get(p["prediction"], len(labels))] += 1
    per_class = {label: (matrix[i][i] / sum(matrix[i]) if sum(matrix[i]) else None) for i, label in enumerate(labels)}
    n = len(predictions)
    correct = sum(p["prediction"] == p["label"] for p in predictions)
    unmatched = [p for p in predictions if p["prediction"] is None]
    metrics = {"top1": correct / n if n else None, "n": n, "correct": correct, "per_class": per_class,
               "unmatched": len(unmatched), "outside_label_set": outside, "unreadable": [list(u) for u in unreadable],
               "labels": labels, "confusion_matrix": {"rows_truth": labels, "columns_prediction": columns, "counts": matrix}}
    if n and all("scores" in p for p in predictions):  # rank mode: how far its confidence can be trusted
        metrics["calibration"] = calibration_summary(predictions, labels, temperature)
        if threshold is not None:
            metrics["abstention"] = abstention_summary(predictions, threshold, unknown)
    return metrics


def add_decisions(predictions, labels, temperature=1.0, threshold=None, unknown="unknown"):
    """Each rank-mode prediction gains ``p`` (the tempered probability of its label) and
    ``decision`` (its label, or ``unknown`` under ``threshold``)."""
    from video_llama.tasks.calibration import decide, probabilities

    for p in predictions:
        if "scores" in p:
            probs = probabilities([p["scores"][label] for label in labels], temperature)
            p["decision"], p["p"] = decide(probs, labels, threshold, unknown)  # p unrounded: it was compared
    return predictions


def abstention_summary(predictions, threshold, unknown):
    """Coverage (share decided) and accuracy on the decided clips at ``threshold``."""
    decided = [p for p in predictions if p["decision"] != unknown]
    correct = sum(p["decision"] == p["label"] for p in decided)
    return {"threshold": threshold, "abstain_label": unknown, "coverage": len(decided) / len(predictions),
            "decided": len(decided), "accuracy_on_decided": correct / len(decided) if decided else None}


def calibration_summary(predictions, labels, temperature=1.0, bins=15):
    """ECE, reliability bins and the risk–coverage curve of the tempered softmax over the label scores."""
    from video_llama.tasks.calibration import expected_calibration_error, probabilities, reliability_bins, risk_coverage

    probs = probabilities([[p["scores"][label] for label in labels] for p in predictions], temperature)
    confidence = probs.max(axis=1)
    correct = [float(p["prediction"] == p["label"]) for p in predictions]
    coverage, risk = risk_coverage(confidence, correct)
    return {"temperature": temperature, "ece": expected_calibration_error(confidence, correct, bins),
            "mean_confidence": float(confidence.mean()), "reliability_bins": reliability_bins(confidence, correct, bins),
            "risk_coverage": {"coverage": coverage.round(4).tolist(), "risk": risk.round(4).tolist()},
            "aurc": float(risk.mean())}


def plot_calibration(calibration, path):
    """Reliability diagram and risk–coverage curve side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    rows = [r for r in calibration["reliability_bins"] if r[4]]
    left.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    left.bar([(lo + hi) / 2 for lo, hi, *_ in rows], [acc for *_, acc, _ in rows],
             width=[hi - lo for lo, hi, *_ in rows], edgecolor="black", alpha=0.7)
    left.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (softmax over the labels)", ylabel="accuracy",
             title=f"reliability, ECE {calibration['ece']:.3f}")
    curve = calibration["risk_coverage"]
    right.plot(curve["coverage"], curve["risk"])
    right.set(xlim=(0, 1), ylim=(0, max(0.05, max(curve["risk"]) * 1.1)), xlabel="coverage (decided share)",
              ylabel="error among decided", title=f"risk-coverage, AURC {calibration['aurc']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion_matrix(confusion, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = confusion["counts"]
    rows, columns = confusion["rows_truth"], confusion["columns_prediction"]
    if not any(row[-1] for row in counts):  # hide the unmatched column when empty
        counts, columns = [r[:-1] for r in counts], columns[:-1]
    size = max(4, 0.7 * len(columns) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max((max(r) for r in counts), default=0)
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(predictions, metrics, out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.jsonl", "w") as f:
        for p in predictions:
            f.write(json.dumps(p) + "\n")
    (out_dir / "confusion_matrix.json").write_text(json.dumps(metrics["confusion_matrix"], indent=1))
    (out_dir / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "confusion_matrix"}, indent=1))
    plot_confusion_matrix(metrics["confusion_matrix"], out_dir / "confusion_matrix.png",
                          f"top-1 {metrics['top1']:.3f} (n={metrics['n']})")
    if "calibration" in metrics:
        plot_calibration(metrics["calibration"], out_dir / "calibration.png")


# ---------------------------------------------------------------------------- the task


@registry.register_task("action_recognition")
class ActionRecognitionTask(BaseTask):
    """Trains like video_text_pretrain; evaluates by top-1 accuracy over a closed label set."""

    def predict(self, model, loader, labels, mode, max_new_tokens=16, length_norm=False):
        """Predictions of this rank's share of a split: [{video, label, prediction, answer|scores}],
        through the model's public ``score`` and ``generate``."""
        model.eval()
        predictions, unreadable = [], []
        for batch in loader:
            unreadable += batch.get("unreadable", [])
            if "frame_features" in batch:
                raise UserError("action recognition scores clips from their pixels, and this split reads a feature "
                                "cache: evaluate a split without feature_cache (the cache is the training split's)")
            if "image" not in batch:  # every clip of the batch was unreadable
                continue
            if mode not in ("rank", "generate"):
                raise ValueError(f"run.eval_mode must be rank or generate, got {mode!r}")
            frames = batch_to_device(batch, model.device)["image"]
            truths = [normalize_truth(a, labels) for a in batch["answer"]]
            made = {}
            for rows, sound in sound_groups(batch.get("sound") or [None] * len(batch["video"])):
                heard = {} if sound is None else {"sound": sound.to(model.device)}  # plugins' models take no sound=
                questions = [batch["question"][i] for i in rows]
                if mode == "rank":
                    scores = model.score(frames[rows], questions, labels, length_normalize=length_norm, **heard)
                    outcomes = [{"prediction": labels[int(row.argmax())],
                                 "scores": {l: round(float(s), 4) for l, s in zip(labels, row)}} for row in scores]
                else:
                    answers = model.generate(frames[rows], questions, max_new_tokens, **heard)
                    outcomes = [{"answer": answer, "prediction": match_answer(answer, labels)} for answer in answers]
                for i, outcome in zip(rows, outcomes):
                    made[i] = {**outcome, **({"sound": sound is not None} if "sound" in batch else {})}
            predictions += [{"video": batch["video"][i], "label": truths[i], **made[i]} for i in sorted(made)]
        return predictions, unreadable

    def trained_labels(self, run_cfg, datasets):
        """run.labels, else the labels.json beside the training annotations, else their distinct
        answers (of annotation files: shards are not read through for it)."""
        files = [f for dataset in datasets for f in dataset.anno_files]
        return label_set(run_cfg, files, lambda: [r for dataset in datasets if not isinstance(dataset, ShardDataset)
                                                  for r in dataset.records]) or None

    def evaluate_split(self, model, loader, run_cfg, split, out_dir, dataset):
        labels = label_set(run_cfg, dataset.anno_files, lambda: dataset.records, model.cfg.get("ckpt"))
        local = self.predict(model, loader, labels, run_cfg.eval_mode, run_cfg.max_new_tokens, run_cfg.length_norm)
        gathered = dist_utils.all_gather_object(local)
        predictions = [p for part, _ in gathered for p in part]
        unreadable = [u for _, part in gathered for u in part]
        decisions = decision_settings(run_cfg, model.cfg.get("ckpt"))
        metrics = compute_metrics(add_decisions(predictions, labels, *decisions), labels, unreadable, *decisions)
        if metrics["n"] == 0:
            raise TooManyBadVideos(
                f"{split}: no clip could be scored ({len(predictions)} predicted, {len(unreadable)} unreadable, "
                f"{len(metrics['outside_label_set'])} with an answer outside the labels {labels}); check the "
                f"split's annotation files {[str(f) for f in dataset.anno_files]}")
        if dist_utils.is_main_process():
            write_results(predictions, metrics, out_dir)
            unmatched = [p for p in predictions if p["prediction"] is None]
            if unmatched:
                logger.warning("%d answer(s) matched no label (counted wrong), e.g. %s", len(unmatched),
                               [(p["video"], p["answer"]) for p in unmatched[:5]])
            if unreadable:
                logger.warning("%s: left out %d clip(s) that could not be decoded (not counted, never replaced): %s",
                               split, len(unreadable), unreadable[:5])
            if metrics["outside_label_set"]:
                logger.warning("%s: left out %d clip(s) whose answer is none of the labels %s (the model cannot name "
                               "them; set run.labels to include them), e.g. %s", split,
                               len(metrics["outside_label_set"]), labels, metrics["outside_label_set"][:5])
            logger.info("%s: top-1 %.3f over %d clips (%s mode); per class: %s; results in %s", split,
                        metrics["top1"], metrics["n"], run_cfg.eval_mode,
                        {k: (round(v, 3) if v is not None else None) for k, v in metrics["per_class"].items()}, out_dir)
            if "abstention" in metrics:
                a = metrics["abstention"]
                logger.info("%s: deciding only at p >= %.3f (temperature %.3f): coverage %.3f, accuracy on the "
                            "decided %s, the rest %r", split, a["threshold"], decisions[0], a["coverage"],
                            "n/a" if a["accuracy_on_decided"] is None else f"{a['accuracy_on_decided']:.3f}", a["abstain_label"])
        results = {f"{split}_top1": metrics["top1"], f"{split}_top1_chance": chance_bound(predictions, labels)}
        loss = answer_nll(predictions)
        if loss is not None:  # rank mode: how sure the model is of the right answers, for ties of top-1
            results[f"{split}_top1_tiebreak_loss"] = loss
        return results


def answer_nll(predictions):
    """Mean negative log-probability of the true label, the scores softmaxed over the labels (as
    calibration reads them at temperature 1); None without scores (generate mode)."""
    scored = [p for p in predictions if p.get("scores") and p["label"] in p["scores"]]
    if not scored:
        return None
    labels = list(scored[0]["scores"])
    return nll([[p["scores"][l] for l in labels] for p in scored], [labels.index(p["label"]) for p in scored], 1.0)


def chance_bound(predictions, labels):
    """The top-1 that always naming the split's most frequent label gets, plus two standard errors:
    a validation top-1 at or below it has not shown that the model learned anything."""
    truths = [p["label"] for p in predictions if p["label"] in labels]
    if not truths:
        return None
    share = max(truths.count(label) for label in set(truths)) / len(truths)
    return share + 2 * (share * (1 - share) / len(truths)) ** 0.5


def normalize_truth(answer, labels):
    """The label an annotation's answer stands for (answers are labels written by `prepare`)."""
    return answer if answer in labels else (match_answer(answer, labels) or answer)
