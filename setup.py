from setuptools import find_packages, setup

setup(
    name="video_llama",
    version="0.1.0",
    description="Finetune Video-LLaMA style video-language models on your own video datasets",
    packages=find_packages(include=["video_llama", "video_llama.*"]),
    package_data={"video_llama": ["configs/**/*.yaml", "configs/*.yaml", "prompts/*.txt", "data_tools/*.txt"]},
    python_requires=">=3.10",
    # Floors are what the code calls: torch 2.6 made FSDP2 public (torch.distributed.fsdp.fully_shard,
    # register_fsdp_forward_method); timm 1.0.16 added Eva(use_post_transformer_norm=); transformers
    # 5.23 added activation_checkpointing_enable (and from_pretrained(dtype=) needs 4.56).
    install_requires=[
        "torch>=2.6",
        "torchvision",
        "timm>=1.0.16",
        "transformers>=5.23",
        "huggingface_hub",
        "sentencepiece",
        "protobuf",
        "safetensors",
        "peft",
        "omegaconf>=2.3",
        "braceexpand",  # shard URL patterns (shards-{000..009}.tar)
        "decord",
        "av",
        "webdataset",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "numpy",
        "pillow",
    ],
    extras_require={"demo": ["gradio>=5"], "test": ["pytest>=7", "pytest-timeout", "gradio>=5", "playwright"]},
    entry_points={"console_scripts": ["video-llama=video_llama.cli.main:main"]},
)
