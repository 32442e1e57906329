"""Runners; importing this package registers the built-in ones."""

from video_llama.runners.runner_base import RunnerBase

__all__ = ["RunnerBase"]
