"""``video-llama plan``: the GPU memory and FLOPs of one training step of an experiment, before
renting the GPU. The experiment's own model runs one step on fake tensors (no weights, no GPU, no
memory: seconds on a laptop, a 7B LLM included) and every byte it holds is counted.

    video-llama plan --cfg-path train_configs/visionbranch_stage2_finetune.yaml [--gpu-memory 24GiB]
    video-llama plan --cfg-path MY.yaml --options run.batch_size_train=2 model.llm_grad_checkpoint=True
    video-llama plan --cfg-path MY.yaml --gpu-memory 24GiB --grid   # frames × settings → the most samples that fit

The LLM's shape comes from ``model.llama_model``'s config.json (a folder, or the Hugging Face
cache), or from the published LLaMA shape its name says (7b, 13b): nothing is downloaded.
"""

import argparse

from video_llama.jobs.plan import grid, parse_bytes, plan


def main(argv=None):
    parser = argparse.ArgumentParser(prog="video-llama plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg-path", required=True, help="the training YAML")
    parser.add_argument("--options", nargs="+", default=[], help="overrides, key=value")
    parser.add_argument("--plugins", nargs="+", default=[], help="modules or .py files that register builders etc.")
    parser.add_argument("--gpu-memory", help="the GPU's memory (e.g. 24GiB, 80GB): say whether the step fits")
    parser.add_argument("--cpu", action="store_true", help="plan a run on the CPU instead of a GPU")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of the run: with run.strategy=fsdp the plan is per "
                        "GPU of the sharded model (estimated from the one-GPU plan)")
    parser.add_argument("--grid", action="store_true", help="also the most samples that fit --gpu-memory for 8/16/32 "
                        "frames × the memory settings: 2-4 plans a setting, minutes at 7B")
    args = parser.parse_args(argv)
    if args.grid and not args.gpu_memory:
        parser.error("--grid needs --gpu-memory")
    import video_llama  # noqa: F401  (registers the built-ins)
    from video_llama.common.config import Config

    gpu_memory = parse_bytes(args.gpu_memory) if args.gpu_memory else None
    cfg = Config.from_file(args.cfg_path, args.options, args.plugins)
    print(plan(cfg, args.cfg_path, gpu=not args.cpu, gpu_memory=gpu_memory, gpus=args.gpus)[2])
    if args.grid:
        print("\n" + "\n".join(grid(cfg, gpu_memory, gpu=not args.cpu)))
    return 0
