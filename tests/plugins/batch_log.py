"""A test plugin: the ``video_text_pretrain`` task that also writes which videos each rank trained
on, one JSON line per batch, to ``$BATCH_LOG_DIR/rank<RANK>.jsonl``. Tests observe a multi-process
run through the public extension point (a registered task) instead of a field the runner keeps."""

import json
import os
import signal
from pathlib import Path

from video_llama.common.registry import registry
from video_llama.tasks.base_task import VideoTextPretrainTask


@registry.register_task("batch_logged_video_text_pretrain")
class BatchLoggedTask(VideoTextPretrainTask):
    def train_step(self, model, samples, num_items_in_batch=None):
        if model.training:
            log = Path(os.environ["BATCH_LOG_DIR"]) / f"rank{os.environ.get('RANK', 0)}.jsonl"
            with log.open("a") as out:
                out.write(json.dumps(samples.get("video")) + "\n")
        return super().train_step(model, samples, num_items_in_batch=num_items_in_batch)



@registry.register_task("killed_once_video_text_pretrain")
class KilledOnceTask(BatchLoggedTask):
    """As batch_logged_video_text_pretrain, and rank $KILL_RANK SIGKILLs itself before its training
    step number $KILL_AT_STEP (counted from 1 in this process), once per $BATCH_LOG_DIR: a worker
    lost mid-epoch, for torchrun --max-restarts to restart."""

    steps = 0

    def train_step(self, model, samples, num_items_in_batch=None):
        if model.training:
            self.steps += 1
            marker = Path(os.environ["BATCH_LOG_DIR"]) / "killed"
            if (os.environ.get("RANK", "0") == os.environ["KILL_RANK"] and self.steps == int(os.environ["KILL_AT_STEP"])
                    and not marker.exists()):
                marker.write_text(f"rank {os.environ.get('RANK')} before its step {self.steps}\n")
                os.kill(os.getpid(), signal.SIGKILL)
        return super().train_step(model, samples, num_items_in_batch=num_items_in_batch)
