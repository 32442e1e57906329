"""The training runner (epochs × iters_per_epoch, DDP, AMP, resume)."""

from video_llama.common.registry import registry


@registry.register_runner("runner_base")
class RunnerBase:
    def __init__(self, cfg, task, model, datasets, job_id=None):
        self.config, self.task, self.model, self.datasets, self.job_id = cfg, task, model, datasets, job_id

    def train(self):
        raise NotImplementedError("the training loop arrives with the runner (spine part 3)")
