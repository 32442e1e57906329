"""Evaluate a model on the test splits of a YAML experiment (accuracy, confusion matrix, ...):

    python evaluate.py --cfg-path eval_configs/quickstart_action_tiny.yaml --options model.ckpt=RUN_DIR
"""

from video_llama.cli import run_cli
from video_llama.jobs.experiment import evaluate

if __name__ == "__main__":
    run_cli(evaluate)
