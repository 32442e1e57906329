"""``video-llama merge-lora RUN_DIR --out DIR``: fold a LoRA run's adapters into its LLM.

Writes ``DIR/llm`` (the merged LLM and its tokenizer, a plain Hugging Face folder) and a checkpoint
of the rest of the trainable part whose config names that LLM and no LoRA, so that
``VideoLLAMA.from_pretrained(DIR)``, ``demo.py --options model.ckpt=DIR model.llama_model=DIR/llm``
and further training use the merged model without peft's adapter layers.
"""

import argparse
from pathlib import Path

from video_llama.common.run_folder import RunFolder
from video_llama.common.errors import UserError
from video_llama.models.video_llama import VideoLLAMA


def merge_lora(run, out):
    """Merge and write; returns the checkpoint folder written."""
    from omegaconf import OmegaConf


    model = VideoLLAMA.from_pretrained(run)
    if not model.uses_lora:
        raise UserError(f"{run} was trained without LoRA (model.lora.r is 0): there is nothing to merge")
    model.merge_lora()
    out = Path(out)
    llm_dir = out / "llm"
    model.llama_model.save_pretrained(llm_dir)
    model.llama_tokenizer.save_pretrained(llm_dir)
    config = OmegaConf.create({"model": OmegaConf.to_container(model.cfg, resolve=True)})
    config.model.llama_model = str(llm_dir.resolve())
    config.model.ckpt = None
    config.model.lora.r = 0
    weights = {n: t for n, t in model.checkpoint_state_dict().items() if not n.startswith("llama_model.")}
    return RunFolder(out).save_checkpoint("checkpoint_merged", weights, {"merged_from": str(run)}, OmegaConf.to_yaml(config))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama merge-lora", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a training run folder (its best checkpoint) or a checkpoint folder")
    parser.add_argument("--out", required=True, help="folder for the merged LLM (llm/) and checkpoint")
    args = parser.parse_args(argv)
    folder = merge_lora(args.run, args.out)
    print(f"merged: {folder} (LLM in {Path(args.out) / 'llm'}); load it with "
          f"--options model.ckpt={args.out} model.llama_model={Path(args.out) / 'llm'} model.lora.r=0")
    return 0
