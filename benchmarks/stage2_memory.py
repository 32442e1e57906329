"""The GPU memory that the guide's stage 2 holds before any activation: weights, gradients, optimizer.

Builds the full-size model on the ``meta`` device (no files, no memory), with the LLM built from the
published LLaMA-2-7B / 13B configuration, and counts bytes from the real parameter shapes and dtypes
the recipe uses: the ViT in fp16 (frozen), the image Q-Former in fp32 (frozen), the LLM in
``model.llama_dtype`` (frozen), the trainable parts in fp32 with their gradients and AdamW's two
moments. Activations are not counted: they depend on the GPU kernels and are measured on a GPU.

    .venv/bin/python benchmarks/stage2_memory.py [--llm 7b|13b] [--llama-dtype bf16|fp16|fp32]
"""

import argparse

import torch
from transformers import LlamaForCausalLM

from video_llama.common.registry import registry
from video_llama.models.llm_shapes import PUBLISHED_LLAMA, published_llama_config

BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
GIB = 1024 ** 3


def count(module, trainable=None):
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", choices=sorted(PUBLISHED_LLAMA), default="7b")
    parser.add_argument("--llama-dtype", choices=sorted(BYTES), default="bf16")
    args = parser.parse_args()

    model_cls = registry.get_model_class("video_llama")
    cfg = model_cls.default_config("pretrain_llama_v2")
    cfg.llama_hidden_size = PUBLISHED_LLAMA[args.llm]["hidden_size"]
    cfg.vit_ckpt = cfg.q_former_model = "random"  # shapes only: no file is read
    with torch.device("meta"):
        model = model_cls.from_config(cfg, load_llm=False)
        llm = LlamaForCausalLM(published_llama_config(args.llm))

    vit = count(model.visual_encoder)
    qformer = count(model, trainable=False) - vit  # the image Q-Former, its query tokens, ln_vision
    trainable = count(model, trainable=True)
    rows = [
        ("EVA ViT-g, frozen, fp16", vit, vit * 2),
        ("image Q-Former + ln_vision, frozen, fp32", qformer, qformer * 4),
        (f"LLaMA-2-{args.llm}, frozen, {args.llama_dtype}", count(llm), count(llm) * BYTES[args.llama_dtype]),
        ("trainable, fp32 weights + gradients + AdamW moments", trainable, trainable * 16),
    ]
    print("| part | parameters | GiB |\n| --- | ---: | ---: |")
    for name, n, nbytes in rows:
        print(f"| {name} | {n / 1e6:,.1f} M | {nbytes / GIB:.2f} |")
    print(f"| **before activations** | {sum(r[1] for r in rows) / 1e6:,.1f} M | {sum(r[2] for r in rows) / GIB:.2f} |")


if __name__ == "__main__":
    main()
