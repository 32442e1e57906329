"""Chat with a finetuned model about a video or an image, in the terminal or the browser:

    python demo.py --cfg-path eval_configs/video_llama_eval_only_vl.yaml --options model.ckpt=RUN_DIR --video clip.mp4
    python demo.py --cfg-path eval_configs/video_llama_eval_only_vl.yaml --options model.ckpt=RUN_DIR --web
"""

import sys

from video_llama.cli.demo import main
from video_llama.cli import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
