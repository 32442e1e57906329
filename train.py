"""Train from a YAML experiment:

    python train.py --cfg-path train_configs/quickstart_action_tiny.yaml
    torchrun --standalone --nproc_per_node=2 train.py --cfg-path X.yaml --options run.init_lr=1e-4
"""

from video_llama.cli import run_cli
from video_llama.jobs.experiment import train

if __name__ == "__main__":
    run_cli(train)
