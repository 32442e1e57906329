"""The 8/4-bit LLM path on a real GPU: what the CPU tests can only show with stand-ins.

For each of 8-bit and 4-bit: builds the tiny model (a random LLaMA written here, so nothing is
downloaded) with ``model.llm_load_in_8bit`` / ``llm_load_in_4bit`` on ``cuda``, checks that the
LLM's linear layers are bitsandbytes' and sit on the GPU, moves the model the way the runner does
(``move_to_device``), runs a training loss with its backward and a greedy answer, and checks that
moving the LLM afterwards is refused with the UserError. Prints one JSON line per setting.

    .venv/bin/python benchmarks/gpu_low_bit_check.py [--work /tmp/low-bit-check]

Needs a CUDA GPU and ``pip install bitsandbytes`` in the environment. Not run yet: no GPU has been
lent to this project (see docs/guide.md, "Big models on small GPUs").
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def check(bits, llm_dir):
    import torch

    from video_llama.common.config import Config
    from video_llama.common.errors import UserError
    from video_llama.common.registry import registry
    from video_llama.models.video_llama import move_to_device

    cfg = Config.from_file(REPO / "eval_configs" / "quickstart_action_tiny.yaml", [
        f"model.llama_model={llm_dir}", f"datasets.webvid_instruct.tokenizer_name={llm_dir}", "model.ckpt=random",
        f"model.llm_load_in_{bits}bit=True", "model.freeze_llm=True", "run.device=cuda"])
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg)
    linear = [type(m).__name__ for m in model.llama_model.modules() if "Linear" in type(m).__name__]
    model = move_to_device(model, torch.device("cuda"))
    size = cfg.model_cfg.img_size
    frames = torch.randn(1, 3, 8, size, size, device="cuda")
    ids, labels = model.conversation("What is happening?", "greet_mode")
    batch = {"image": frames, "input_ids": torch.tensor([ids], device="cuda"),
             "labels": torch.tensor([labels], device="cuda"),
             "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device="cuda")}
    loss = model(batch)["loss"]
    loss.backward()
    answer = model.generate(frames, ["What is happening?"], max_new_tokens=4)[0]
    try:
        model.llama_model.to("cpu")
        refused = False
    except UserError:
        refused = True
    return {"bits": bits, "bnb_linear_layers": sum("Linear8bitLt" in n or "Linear4bit" in n for n in linear),
            "llm_devices": sorted({str(p.device) for p in model.llama_model.parameters()}),
            "loss": round(float(loss.detach()), 4), "answer": answer, "move_refused": refused,
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/low-bit-check", help="where the tiny LLM is written")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: this check needs one", file=sys.stderr)
        return 2
    from video_llama.data_tools.tiny_llm import write_tiny_llm

    llm_dir = Path(args.work) / "tiny-llm"
    if not (llm_dir / "config.json").is_file():
        write_tiny_llm(llm_dir)
    for bits in (8, 4):
        print(json.dumps(check(bits, llm_dir)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
