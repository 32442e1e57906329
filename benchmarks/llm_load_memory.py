"""Peak memory of loading a causal LM the way the model does (``load_llm_and_tokenizer``).

Writes a random LLaMA of about 1 GB (fp32 safetensors) once, then loads it in a fresh process
and reports the peak resident memory added by the load, as a multiple of the file size. The
target is under 1.5x: the weights must not be materialised twice.

    .venv/bin/python benchmarks/llm_load_memory.py [--dir /tmp/llm-1gb] [--dtype fp32|bf16]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, resource, sys, torch
import video_llama.models.video_llama as vl
import transformers.models.llama.modeling_llama  # library import cost is not loading cost
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model, tok = vl.load_llm_and_tokenizer(sys.argv[1], vl.DTYPES[sys.argv[2]])
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for p in model.parameters():  # touch every weight: memory-mapped pages count once read
    float(p.float().sum())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
params = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"peak_added_bytes": (after - before) * 1024, "after_load_bytes": (loaded - before) * 1024,
                  "weights_in_memory_bytes": params}))
"""


def write_model(folder):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from video_llama.data_tools.tiny_llm import write_tiny_llm

    write_tiny_llm(folder)  # for the tokenizer files
    config = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=15,
                         num_attention_heads=16, num_key_value_heads=16, tie_word_embeddings=False)
    with torch.device("cpu"):
        LlamaForCausalLM(config).save_pretrained(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="/tmp/video_llama_llm_1gb")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()
    folder = Path(args.dir)
    if not (folder / "model.safetensors").is_file():
        write_model(folder)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder), args.dtype], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = result["peak_added_bytes"] / size
    print(f"file {size / 2**30:.2f} GiB ({args.dtype} load): resident right after loading "
          f"{result['after_load_bytes'] / 2**30:.2f} GiB; peak memory added once every weight was read {result['peak_added_bytes'] / 2**30:.2f} GiB "
          f"= {ratio:.2f}x the file; weights in memory {result['weights_in_memory_bytes'] / 2**30:.2f} GiB "
          f"({'within' if ratio < 1.5 else 'over'} the 1.5x target)")


if __name__ == "__main__":
    main()
