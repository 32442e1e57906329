"""Train from a YAML experiment:

    python train.py --cfg-path train_configs/tiny_cpu_finetune.yaml
    torchrun --standalone --nproc_per_node=2 train.py --cfg-path X.yaml --options run.init_lr=1e-4
"""

from video_llama.common.train_job import main

if __name__ == "__main__":
    main()
