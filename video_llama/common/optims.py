"""Learning-rate schedules, registered by name (``run.lr_sched``).

All schedules are functions of the *global* iteration (``epoch * iters_per_epoch + step``), so a
resumed run needs no scheduler state beyond the step it stopped at. Warmup is linear from
``warmup_lr`` to ``init_lr`` over the first ``warmup_steps`` iterations, counted across epochs: a
warmup longer than one epoch simply continues into the next (LAVIS stopped it at the end of epoch
0); a warmup longer than the whole run never reaches ``init_lr`` and is reported at start-up.
"""

import logging
import math

from video_llama.common.registry import registry

logger = logging.getLogger(__name__)


class LRSchedule:
    """Base: warmup, then :meth:`after_warmup`. Call :meth:`step` once per iteration."""

    def __init__(self, optimizer, max_epoch, iters_per_epoch, init_lr, min_lr=0.0, warmup_steps=0, warmup_start_lr=-1, **_):
        self.optimizer = optimizer
        self.max_epoch = max_epoch
        self.iters_per_epoch = iters_per_epoch
        self.init_lr = init_lr
        self.min_lr = min_lr
        self.warmup_steps = warmup_steps
        self.warmup_start_lr = warmup_start_lr if warmup_start_lr >= 0 else init_lr
        self.total_steps = max_epoch * iters_per_epoch
        if warmup_steps > self.total_steps:
            logger.warning(
                "run.warmup_steps (%d) exceeds the run's %d iterations (max_epoch × iters_per_epoch): "
                "the learning rate will never reach run.init_lr", warmup_steps, self.total_steps,
            )

    def lr_at(self, epoch, step):
        global_step = epoch * self.iters_per_epoch + step
        if global_step < self.warmup_steps:
            frac = global_step / max(1, self.warmup_steps)
            return self.warmup_start_lr + frac * (self.init_lr - self.warmup_start_lr)
        return self.after_warmup(epoch, global_step)

    def after_warmup(self, epoch, global_step):
        raise NotImplementedError

    def step(self, cur_epoch, cur_step):
        """Set the lr of every parameter group for iteration ``cur_step`` of epoch ``cur_epoch``."""
        lr = self.lr_at(cur_epoch, cur_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def describe(self):
        points = sorted({0, min(self.warmup_steps, self.total_steps - 1), self.total_steps // 2, self.total_steps - 1})
        plan = ", ".join(f"step {s}: {self.lr_at(s // self.iters_per_epoch, s % self.iters_per_epoch):.2e}" for s in points)
        return f"{type(self).__name__} ({plan})"


@registry.register_lr_scheduler("linear_warmup_cosine_lr")
class LinearWarmupCosineLRScheduler(LRSchedule):
    """Per iteration: cosine from ``init_lr`` down to ``min_lr`` at the last iteration."""

    def after_warmup(self, epoch, global_step):
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (global_step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (self.init_lr - self.min_lr) * (1 + math.cos(math.pi * progress))


@registry.register_lr_scheduler("linear_warmup_step_lr")
class LinearWarmupStepLRScheduler(LRSchedule):
    """Per epoch: ``init_lr × decay_rate ** epoch``, never below ``min_lr``."""

    def __init__(self, optimizer, max_epoch, iters_per_epoch, init_lr, min_lr=0.0, decay_rate=1.0, **kwargs):
        super().__init__(optimizer, max_epoch, iters_per_epoch, init_lr, min_lr, **kwargs)
        self.decay_rate = decay_rate

    def after_warmup(self, epoch, global_step):
        return max(self.min_lr, self.init_lr * self.decay_rate**epoch)


@registry.register_lr_scheduler("constant_lr")
class ConstantLRScheduler(LRSchedule):
    """``init_lr`` after the warmup."""

    def after_warmup(self, epoch, global_step):
        return self.init_lr
