"""The training runner: ``max_epoch`` × ``iters_per_epoch`` iterations, DDP, AMP, exact resume.

An *iteration* is one batch of ``batch_size_train`` samples per process; with
``accum_grad_iters = k`` the optimizer steps every k iterations (and at the end of each epoch), so
the effective batch is ``batch_size_train × processes × accum_grad_iters``. Read :meth:`train`
top to bottom; everything it calls is a few lines.
"""

import datetime
import functools
import hashlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from video_llama.common import dist_utils
from video_llama.common.config import ConfigError
from video_llama.common.errors import CheckpointError, Interrupted, TrainingError
from video_llama.common.registry import registry
from video_llama.common.run_folder import LATEST, RunFolder, checkpoint_in_use, load_checkpoint, read_bad_clips
from video_llama.common.utils import preserved_rng, rng_state, seed_everything, set_rng_state
from video_llama.conversation import IGNORE_INDEX, collate_video_samples
from video_llama.conversation.segment_encoding import TEXT_IDS, TEXT_IDS_KEY
from video_llama.datasets.sampling import MixedDataset, MixingBatchSampler
from video_llama.models.video_llama import move_to_device
from video_llama.processors.pixel_plan import batch_to_device
from video_llama.runners import fsdp

logger = logging.getLogger(__name__)

# Settings that change what a resumed run computes; a disagreement with the checkpoint is reported.
RESUME_SENSITIVE = ("seed", "batch_size_train", "accum_grad_iters", "iters_per_epoch", "max_epoch", "init_lr",
                    "min_lr", "warmup_steps", "lr_sched", "weight_decay", "lr_scales")


def launcher_job_id(run_cfg):
    """``job_<id>`` for ``run.resume: auto``: the id every restart of one job shares (SLURM's job id,
    with the array task; else torchrun's run id), so that a restart finds its own run folder. None
    when resuming is not automatic or no launcher gave one (a warning says that auto cannot work)."""
    if run_cfg.get("resume") != "auto":
        return None
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"job_{slurm}" + (f"_{task}" if task else "")
    elastic = os.environ.get("TORCHELASTIC_RUN_ID")
    if elastic and elastic != "none":
        return f"job_{elastic}"
    logger.warning("run.resume=auto, but neither SLURM nor torchrun gave this job an id (SLURM_JOB_ID, "
                   "TORCHELASTIC_RUN_ID): a new run folder is made; launch with torchrun or under SLURM, or give "
                   "run.resume_ckpt_path")
    return None


@registry.register_runner("runner_base")
class RunnerBase:
    def __init__(self, cfg, task, model, datasets, job_id=None):
        self.config, self.task, self.datasets = cfg, task, datasets
        self.run_cfg = cfg.run_cfg
        self.rank, self.world_size = dist_utils.get_rank(), dist_utils.get_world_size()
        self.device = torch.device(dist_utils.device_for(self.run_cfg, int(os.environ.get("LOCAL_RANK", 0))))
        self._release_idle_encoders(model)
        self.model = move_to_device(model, self.device)  # a quantised LLM stays where it was loaded
        self.job_id = job_id or launcher_job_id(self.run_cfg) or datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.start_epoch, self.start_step = 0, 0
        self.best = (None, None, None)  # (checkpoint name, validation metric value, metric name)
        self.best_rank = None  # what the best won with (see _keep_best)
        self.chance = None  # the validation metric a model that learned nothing reaches, when the task says
        self.window_videos = []  # the clips of the accumulation window in progress, to name a failed step's

    def _release_idle_encoders(self, model):
        """Frozen encoders a run never uses (``idle_image_encoders``: a feature cache stands for
        them, or the frames go to the audio branch alone) stay off the device (evaluate.py builds
        its own model)."""
        why = model.idle_image_encoders(self.config.datasets_cfg, self.run_cfg) if hasattr(model, "idle_image_encoders") else None
        if why:
            released = model.release_frozen_encoders()
            logger.info("the ViT and image Q-Former (%.2f GiB) stay off %s: %s", released / 2**30, self.device, why)

    # ------------------------------------------------------------------ the loop
    def train(self):
        """Train, checkpoint each epoch (and every ``save_freq_iters``), evaluate ``valid_splits``."""
        run = self.run_cfg
        resume_from = run.resume_ckpt_path or self._own_checkpoint()
        checkpoint = load_checkpoint(resume_from) if resume_from else None
        if checkpoint and checkpoint[1]["epoch"] >= run.max_epoch and not run.resume_ckpt_path:
            return self._already_finished(checkpoint[3])  # a restart after the last save: nothing is left
        if checkpoint and checkpoint[1]["epoch"] >= run.max_epoch:
            raise CheckpointError(f"run.resume_ckpt_path: {checkpoint[3]} ends epoch {checkpoint[1]['epoch']}, "
                                  f"and run.max_epoch is {run.max_epoch}: the run is finished; raise run.max_epoch "
                                  "to train longer (the schedule then stretches to the new length)")
        self.run_dir = self._make_run_dir(resume_from=checkpoint[3] if checkpoint else None)
        self._count_bad_clips_for_the_run()
        sampler, loader = self._train_loader()
        labels = self.task.trained_labels(run, self._train_datasets()[0]) if self.rank == 0 else None
        if labels:
            self.run_folder.write_labels(labels)
        if checkpoint:
            self._resume_weights(checkpoint)  # into the plain model, before any sharding
        ddp_model = self._wrap_model()
        optimizer = build_optimizer(self.model, self.run_cfg)  # after wrapping: FSDP replaces the parameters by sharded ones
        scheduler = registry.get_lr_scheduler_class(run.lr_sched)(
            optimizer, max_epoch=run.max_epoch, iters_per_epoch=sampler.iters_per_epoch, init_lr=run.init_lr,
            min_lr=run.min_lr, warmup_steps=run.warmup_steps, warmup_start_lr=run.warmup_lr,
            decay_rate=run.lr_decay_rate)
        autocast, scaler = self._precision()
        if checkpoint:
            self._resume(checkpoint, optimizer, scaler)
        self._log_start(sampler, optimizer, scheduler)
        try:
            with stop_signals() as self.stop_signal:
                return self._train_epochs(run, sampler, loader, optimizer, scheduler, autocast, scaler, ddp_model)
        finally:  # also when the run fails or stops: what it logged is on disk, and no file stays open
            self._close_logs()

    def _train_epochs(self, run, sampler, loader, optimizer, scheduler, autocast, scaler, ddp_model):
        """The loop: epochs of accumulation windows, checkpoints, validation, a stop on a signal."""
        history = []
        iters = sampler.iters_per_epoch
        for epoch in range(self.start_epoch, run.max_epoch):
            step = self.start_step if epoch == self.start_epoch else 0
            sampler.set_epoch(epoch, step)
            self.model.train()
            progress = self._progress(len(sampler), epoch)
            batches = iter(loader)
            while step < iters:
                window_size = self._window_size(step, iters)  # resumes start at a window's first step
                window = [next(batches) for _ in range(window_size)]
                num_items, stop = self._window_totals(window)
                if stop:
                    self._stop(epoch, step, optimizer, scaler)
                for i, batch in enumerate(window):
                    lr = scheduler.step(epoch, step)
                    loss = self.train_iteration(ddp_model, batch, i == window_size - 1, num_items, window_size,
                                                optimizer, scaler, autocast)
                    record = {"epoch": epoch, "step": step, "global_step": epoch * iters + step, "loss": loss, "lr": lr}
                    history.append(record)
                    self._log_metrics(record, every=run.log_freq)
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                    step += 1
                if run.save_freq_iters and step % run.save_freq_iters == 0 and step < iters:
                    self._save(epoch, step, optimizer, scaler)
            progress.close()
            checkpoint = f"checkpoint_e{epoch + 1}_s0"
            improved = False
            if run.valid_splits:  # before the save, so the checkpoint carries the best after this epoch
                with preserved_rng():  # evaluation never draws from the training generators
                    results = self.evaluate(run.valid_splits, f"epoch{epoch}")
                self._log_metrics({"epoch": epoch, **results}, every=1)
                improved = self._keep_best(checkpoint, results)
            self._save(epoch + 1, 0, optimizer, scaler)
            if improved and self.rank == 0:
                self.run_folder.mark_best(checkpoint, {self.best[2]: self.best[1]})
        return self._finish(history)

    def train_iteration(self, ddp_model, batch, is_last, num_items, window_size, optimizer, scaler, autocast):
        """Forward and backward one batch; step the optimizer on the last batch of the window.

        The loss of an optimizer step is the mean over every answer token of the effective batch
        (all batches of the window, all ranks): each batch contributes its token sum divided by
        ``num_items``, that total (DDP averages gradients over ranks, hence the factor
        world_size). Without token counts (a dataset that yields no ``labels``), each batch's mean
        is divided by the window size. Gradients are all-reduced only on the window's last batch.

        Returns:
            this batch's mean loss per answer token, for the log.
        """
        if isinstance(ddp_model, torch.nn.parallel.DistributedDataParallel):
            ddp_model.require_backward_grad_sync = is_last  # like no_sync(), without a context block
        elif hasattr(ddp_model, "set_requires_gradient_sync"):  # FSDP: reduce-scatter on the last batch only
            ddp_model.set_requires_gradient_sync(is_last)
        self.window_videos.extend(batch.get("video") or [])
        batch = self._to_device(batch)
        with autocast():
            loss = self.task.train_step(ddp_model, batch, num_items_in_batch=num_items)
        if num_items is None:
            scaler.scale(loss / window_size).backward()
            logged = loss.item()
        else:
            scaler.scale(loss * self.world_size).backward()
            logged = loss.item() * num_items / max(1, answer_tokens(batch))
        if is_last:
            if self.run_cfg.max_grad_norm:
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(self._trainable_params(), self.run_cfg.max_grad_norm)
            else:
                norm = None
            if scaler.is_enabled() or self._finite(norm):  # fp16's scaler skips a non-finite step itself
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            self.window_videos = []
        return logged

    def _finite(self, norm=None):
        """Whether the window's gradients (all-reduced: the same on every rank) are finite; if not,
        ``run.nonfinite_loss`` says what happens: stop naming the window's clips, or skip the step."""
        if norm is None:
            grads = [p.grad for p in self._trainable_params() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.tensor(0.0)
        if hasattr(norm, "full_tensor"):  # FSDP: the norm over every rank's shards
            norm = norm.full_tensor()
        if torch.isfinite(norm).item():
            return True
        where = f"rank {self.rank}'s clips of this step: {self.window_videos[:8]}"
        if self.run_cfg.nonfinite_loss == "skip":
            logger.warning("non-finite gradients (norm %s): optimizer step skipped (run.nonfinite_loss=skip); %s",
                           norm.item(), where)
            return False
        raise TrainingError(f"the gradients turned non-finite (norm {norm.item()}); {where}. Lower run.init_lr, set "
                            "run.max_grad_norm, check those clips, or set run.nonfinite_loss=skip to skip such steps; "
                            f"the latest checkpoint in {self.run_dir} is from before it")

    def _stop(self, epoch, step, optimizer, scaler):
        """Checkpoint where the run stands, then end it with the command that resumes it."""
        self._save(epoch, step, optimizer, scaler)
        name = self.stop_signal.received or "a signal on another rank"
        how = f"Resume with the same command plus --options run.resume_ckpt_path={self.run_dir}"
        if self.run_cfg.get("resume") == "auto":
            how += " (a requeued SLURM job or a torchrun restart resumes by itself: run.resume=auto)"
        raise Interrupted(f"stopped by {name} at epoch {epoch}, step {step}; checkpoint written to "
                          f"{self.run_dir / f'checkpoint_e{epoch}_s{step}'}. {how}",
                          exit_code=128 + getattr(signal.Signals, name, signal.SIGTERM).value)

    def _window_totals(self, window):
        """(answer tokens of the window's batches summed over ranks, None when a batch has no labels;
        whether any rank got SIGINT/SIGTERM, so that all stop at the same step), in one collective."""
        has_labels = all("labels" in batch for batch in window)
        tokens = sum(answer_tokens(batch) for batch in window) if has_labels else 0
        tokens, stops = dist_utils.all_reduce_sum([tokens, 1 if self.stop_signal.received else 0])
        return (max(1, int(tokens)) if has_labels else None), stops > 0

    def _window_size(self, step, iters_per_epoch):
        """Batches in the accumulation window holding ``step`` (the epoch may end it early)."""
        accum = self.run_cfg.accum_grad_iters
        start = step - step % accum
        return min(accum, iters_per_epoch - start)

    @torch.no_grad()
    def evaluate(self, splits, tag):
        """The task's metrics for every dataset holding each split (sharded over ranks).

        Results (and the task's files, e.g. a confusion matrix) go to ``run_dir/eval_<tag>/``.
        """
        self.model.eval()
        results = {}
        for split in splits:
            holders = [(name, parts[split]) for name, parts in self.datasets.items() if split in parts]
            if not holders:
                raise ConfigError([f"run.valid_splits/test_splits names {split!r}, which no dataset has "
                                  f"(splits: { {n: sorted(p) for n, p in self.datasets.items()} })"])
            for name, dataset in holders:
                prefix = f"{name}/" if len(self.datasets) > 1 else ""
                out_dir = self.run_dir / f"eval_{tag}" / f"{name}_{split}"
                metrics = self.task.evaluate_split(self.model, self.eval_loader(dataset), self.run_cfg, split,
                                                   out_dir, dataset)
                results.update({prefix + k: v for k, v in metrics.items()})
        self.model.train()
        return results

    def evaluate_only(self):
        """``evaluate.py``: the test splits of the loaded model, into a run folder of their own."""
        self.run_dir = self._make_run_dir()
        results = self.evaluate(self.run_cfg.test_splits, "test")
        ckpt = self.config.model_cfg.get("ckpt")
        loaded = str(checkpoint_in_use(ckpt)) if ckpt and ckpt != "random" else None  # a run folder: its best
        summary = {"run_dir": str(self.run_dir), "model_ckpt": ckpt, "checkpoint": loaded, **results}
        if ckpt == "random":
            summary["untrained"] = True
        if self.rank == 0:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            logger.info("evaluation%s: %s; files in %s", " of an UNTRAINED model (model.ckpt: random)"
                        if ckpt == "random" else f" of {loaded}", results, self.run_dir)
        return summary

    # ------------------------------------------------------------------ set-up helpers

    def _already_finished(self, checkpoint):
        """The summary of a job that ``run.resume: auto`` finds finished (a process died after the
        last checkpoint, and torchrun or SLURM started the job again): success, not a loop of restarts."""
        self.run_dir = Path(checkpoint).parent
        logger.info("run.resume=auto: %s already holds the last checkpoint (%s, epoch %d of %d): nothing left to "
                    "train", self.run_dir, Path(checkpoint).name, self.run_cfg.max_epoch, self.run_cfg.max_epoch)
        written = self.run_dir / "summary.json"
        summary = json.loads(written.read_text()) if written.is_file() else {}
        return {**summary, "run_dir": str(self.run_dir), "checkpoint": str(checkpoint), "already_finished": True}

    def _own_checkpoint(self):
        """With ``run.resume: auto``, this job's run folder when it holds a checkpoint, else None."""
        if self.run_cfg.get("resume") != "auto":
            return None
        own = Path(self.run_cfg.output_dir) / self.job_id
        if (own / LATEST).is_file():
            logger.info("run.resume=auto: %s holds checkpoint %s; continuing from it", own,
                        (own / LATEST).read_text().strip())
            return str(own)
        return None

    def _make_run_dir(self, resume_from=None):
        """output_dir/<job id>, never an earlier run's folder (rank 0 picks the name); a resumed
        run continues in the folder of the checkpoint it resumes from, and with ``run.resume: auto``
        a restarted job in its own folder even before its first checkpoint."""
        run_dir = None
        own = Path(self.run_cfg.output_dir) / self.job_id
        if self.rank == 0:
            config_yaml = OmegaConf.to_yaml(self.config.config)
            if resume_from is not None:
                run_dir = RunFolder(Path(resume_from).parent).write_config(config_yaml).path
            elif self.run_cfg.get("resume") == "auto" and own.is_dir():
                run_dir = RunFolder(own).write_config(config_yaml).path
            else:
                run_dir = RunFolder.create(self.run_cfg.output_dir, self.job_id, config_yaml).path
        return Path(dist_utils.all_gather_object(str(run_dir))[0])

    @property
    def run_folder(self):
        return RunFolder(self.run_dir)

    def _count_bad_clips_for_the_run(self):
        """Every dataset lists its bad clips in the run folder, whichever worker or rank finds them,
        so that max_failed_ratio holds for the run (a resumed run keeps counting its earlier ones)."""
        for splits in self.datasets.values():
            for dataset in splits.values():
                if hasattr(dataset, "log_failures_to"):
                    dataset.log_failures_to(self.run_folder.bad_clips)

    def _train_datasets(self):
        datasets, ratios = [], []
        for name, splits in self.datasets.items():
            parts = [splits[s] for s in self.run_cfg.train_splits if s in splits]
            if not parts:
                raise ConfigError([f"datasets.{name} has no split among run.train_splits {list(self.run_cfg.train_splits)}; "
                                  f"it has {sorted(splits)}"])
            if len(parts) > 1:
                raise ConfigError([f"datasets.{name}: use one train split per dataset (got {len(parts)})"])
            datasets.append(self._defer_pixels(parts[0]))
            ratios.append(self.config.datasets_cfg[name].get("sample_ratio", 1))
        return datasets, ratios

    def _collate(self):
        tokenizer = getattr(self.model, "llama_tokenizer", None)
        return functools.partial(collate_video_samples, pad_token_id=tokenizer.pad_token_id if tokenizer else 0)

    def _train_loader(self):
        datasets, ratios = self._train_datasets()
        run = self.run_cfg
        sampler = MixingBatchSampler([len(d) for d in datasets], ratios, run.batch_size_train, seed=run.seed,
                                     rank=self.rank, world_size=self.world_size, iters_per_epoch=run.iters_per_epoch,
                                     streams=[hasattr(d, "stream_item") for d in datasets], num_workers=run.num_workers)
        if len(datasets) > 1:  # each batch comes from one dataset, drawn with these probabilities
            mix = ", ".join(f"{name} ({len(d)} samples, sample_ratio {r}: {p:.0%} of batches)"
                            for name, d, r, p in zip(self.datasets, datasets, ratios, sampler.probs))
            logger.info("training mix over %d iterations per epoch: %s", sampler.iters_per_epoch, mix)
        loader = DataLoader(
            MixedDataset(datasets), batch_sampler=sampler, num_workers=run.num_workers, collate_fn=self._collate(),
            worker_init_fn=functools.partial(seed_worker, base_seed=run.seed, rank=self.rank),
            # a private generator: creating loader iterators must not consume the global torch RNG
            # (dropout draws from it, and a resumed run must draw exactly the same numbers)
            generator=torch.Generator().manual_seed(run.seed), pin_memory=self.device.type == "cuda",
            # workers live for the whole run: their bad-clip counts keep growing across epochs
            persistent_workers=run.num_workers > 0,
        )
        return sampler, loader

    def eval_loader(self, dataset):
        """This rank's share of ``dataset`` in order, batched for evaluation."""
        shard = list(range(self.rank, len(dataset), self.world_size))
        return DataLoader(torch.utils.data.Subset(self._defer_pixels(dataset), shard), batch_size=self.run_cfg.batch_size_eval,
                          num_workers=self.run_cfg.num_workers, collate_fn=self._collate(),
                          generator=torch.Generator().manual_seed(self.run_cfg.seed))

    def _trainable_params(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def _precision(self):
        """(autocast context factory, grad scaler) for run.amp / run.amp_dtype on this device."""
        device = self.device.type
        dtype, enabled, note = autocast_rule(self.run_cfg, device)
        if note:
            logger.warning(note)
        autocast = functools.partial(torch.autocast, device_type=device, dtype=dtype, enabled=enabled)
        scaler = torch.amp.GradScaler(device, enabled=enabled and dtype == torch.float16)
        return autocast, scaler

    def _wrap_model(self):
        """The model that trains: itself alone, DDP around it, or (``run.strategy: fsdp``) itself
        sharded in place."""
        if self.world_size == 1:
            return self.model
        if self.run_cfg.strategy == "fsdp":
            return fsdp.shard_model(self.model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _to_device(self, batch):
        return batch_to_device(batch, self.device)

    def _defer_pixels(self, dataset):
        """``run.pixels_on_device``: ``dataset``'s workers hand over uint8 frames, finished here."""
        on_device = self.run_cfg.pixels_on_device
        if on_device is None:
            on_device = self.device.type != "cpu"
        if hasattr(dataset, "defer_pixels"):
            dataset.defer_pixels = on_device
        return dataset

    # ------------------------------------------------------------------ checkpoints
    def _save(self, epoch, step, optimizer, scaler):
        """Checkpoint to resume at (epoch, step); every rank's RNG state goes to rank 0's file. A
        save that fails (a full disk) ends the run on every rank, with rank 0's reason, instead of
        leaving the others waiting for it."""
        rng_states = dist_utils.all_gather_object(rng_state())
        weights = fsdp.gathered_state(self.model.checkpoint_state_dict())  # whole on every rank under FSDP too
        optimizer_state = fsdp.gathered_optimizer_state(optimizer)
        failure = None
        if self.rank == 0:
            state = {"epoch": epoch, "step": step, "optimizer": optimizer_state, "scaler": scaler.state_dict(),
                     "rng": rng_states, "world_size": self.world_size, "best": list(self.best),
                     "best_rank": list(self.best_rank) if self.best_rank else None, "strategy": self.run_cfg.strategy}
            try:
                path = self.run_folder.save_checkpoint(f"checkpoint_e{epoch}_s{step}", weights, state,
                                                       OmegaConf.to_yaml(self.config.config), {TEXT_IDS_KEY: TEXT_IDS})
            except CheckpointError as err:
                failure = str(err)
            else:
                logger.info("checkpoint written: %s", path)
                self.last_checkpoint = path
                if self.run_cfg.keep_checkpoints:
                    pruned = self.run_folder.prune_checkpoints(self.run_cfg.keep_checkpoints,
                                                               protect={self.best[0], path.name})
                    if pruned:
                        logger.info("run.keep_checkpoints=%d: deleted %s", self.run_cfg.keep_checkpoints, pruned)
        failures = [f for f in dist_utils.all_gather_object(failure) if f]  # every rank meets here
        if failures:
            raise CheckpointError(failures[0])
        return f"checkpoint_e{epoch}_s{step}"

    def _keep_best(self, checkpoint, results):
        """Whether ``checkpoint`` is the best so far on the first validation metric (highest for
        accuracies, lowest for losses); if so it becomes ``self.best``. A tie goes to the lower
        ``<metric>_tiebreak_loss`` when the task reports one, else to the later checkpoint: on a
        small split the first epoch to reach a top-1 often holds it, and its weights are the least trained."""
        key, value = next(iter(results.items()))
        self.chance = results.get(f"{key}_chance")
        sign = -1 if key.endswith("loss") else 1
        rank = (sign * value, -results.get(f"{key}_tiebreak_loss", 0.0))
        if self.best[0] is None or rank >= self.best_rank:
            self.best, self.best_rank = (checkpoint, value, key), rank
            logger.info("best so far: %s (%s %.4f)", checkpoint, key, value)
            return True
        return False

    def _resume_weights(self, checkpoint):
        weights, _, _, folder = checkpoint
        missing = {n for n, p in self.model.named_parameters() if p.requires_grad} - set(weights)
        if missing:
            raise CheckpointError(f"run.resume_ckpt_path: {folder} lacks trainable parameters {sorted(missing)[:5]}; "
                                  "was it written with other freezing flags?")
        own = self.model.state_dict()
        mismatched = [f"{n}: {tuple(t.shape)} in the checkpoint, {tuple(own[n].shape)} here"
                      for n, t in weights.items() if n in own and own[n].shape != t.shape]
        if mismatched:
            raise CheckpointError(f"run.resume_ckpt_path: {folder} was written by a model of other sizes "
                                  f"({'; '.join(mismatched[:3])}); resume with the model: section it was trained with")
        self.model.load_state_dict(weights, strict=False)

    def _resume(self, checkpoint, optimizer, scaler):
        """Optimizer, scaler, RNG and schedule position of ``checkpoint`` (weights: _resume_weights)."""
        _, state, config_yaml, folder = checkpoint
        fsdp.load_optimizer_state(optimizer, state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if state["world_size"] == self.world_size:
            set_rng_state(state["rng"][self.rank])
        else:
            logger.warning("checkpoint was written by %d processes, this run has %d: RNG states are not restored, "
                           "so dropout noise differs from the original run", state["world_size"], self.world_size)
        saved = OmegaConf.create(config_yaml).run
        for key in RESUME_SENSITIVE:
            if saved.get(key) != self.run_cfg.get(key):
                logger.warning("run.%s is %s in the checkpoint and %s now; the current config wins",
                               key, saved.get(key), self.run_cfg.get(key))
        self.start_epoch, self.start_step = state["epoch"], state["step"]
        if state.get("best") and state["best"][0] is not None:
            self.best = tuple(state["best"])
            sign = -1 if self.best[2].endswith("loss") else 1  # checkpoints of before ties were broken: any tie wins
            self.best_rank = tuple(state.get("best_rank") or (sign * self.best[1], float("-inf")))
            if self.rank == 0:  # the best as of this checkpoint (a later run may have moved the file)
                self.run_folder.mark_best(self.best[0], {self.best[2]: self.best[1]})
        if self.rank == 0:
            with open(self.run_dir / "metrics.jsonl", "a") as f:  # later lines of the same step supersede
                f.write(json.dumps({"resumed_from": folder.name, "epoch": self.start_epoch, "step": self.start_step}) + "\n")
        logger.info("resumed from %s at epoch %d, step %d (best so far: %s)", folder, self.start_epoch,
                    self.start_step, self.best[0])

    # ------------------------------------------------------------------ logging
    def _close_logs(self):
        for log in (getattr(self, "metrics_file", None), getattr(self, "tensorboard", None)):
            if log is not None:
                log.close()
        self.metrics_file = self.tensorboard = None

    def _log_start(self, sampler, optimizer, scheduler):
        if self.rank != 0:
            return
        self.metrics_file = open(self.run_dir / "metrics.jsonl", "a")
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))
        run = self.run_cfg
        trainable = sum(p.numel() for p in self._trainable_params())
        logger.info(
            "start: %d process(es) on %s | effective batch %d = %d per process × %d processes × %d accumulation | "
            "%d epochs × %d iterations | trainable parameters %s | lr plan: %s | output: %s",
            self.world_size, self.device, run.batch_size_train * self.world_size * run.accum_grad_iters,
            run.batch_size_train, self.world_size, run.accum_grad_iters, run.max_epoch, sampler.iters_per_epoch,
            f"{trainable:,}", scheduler.describe(), self.run_dir)

    def _log_metrics(self, record, every):
        if self.rank != 0:
            return
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        step = record.get("global_step", record.get("epoch", 0))
        for key, value in record.items():
            if isinstance(value, float):
                self.tensorboard.add_scalar(f"train/{key}" if "step" in record else f"eval/{key}", value, step)
        if "step" not in record:
            logger.info("evaluation after epoch %d: %s", record["epoch"],
                        ", ".join(f"{k} {v:.4f}" for k, v in record.items() if isinstance(v, float)))
        elif record["step"] % max(1, every) == 0:
            logger.info("epoch %d step %d: loss %.4f lr %.2e", record["epoch"], record["step"], record["loss"], record["lr"])

    def _progress(self, total, epoch):
        from tqdm import tqdm

        # a bar only on a terminal: in a log file its \r updates are noise (log_freq lines remain)
        return tqdm(total=total, desc=f"epoch {epoch}", disable=self.rank != 0 or not sys.stderr.isatty(),
                    dynamic_ncols=True)

    def _finish(self, history):
        """Summary on rank 0, with a fingerprint of every rank's trained weights: replicas that
        differ (a parameter that skipped the all-reduce, a rank that stepped alone) are an error."""
        digest = hashlib.sha256()
        for param in self._trainable_params():  # whole parameters: FSDP ranks hold shards
            digest.update(fsdp.full(param.detach()).float().cpu().numpy().tobytes())
        fingerprints = dist_utils.all_gather_object(digest.hexdigest())
        summary = {"run_dir": str(self.run_dir), "steps": len(history), "best_checkpoint": self.best[0],
                   "final_loss": history[-1]["loss"] if history else None,
                   "checkpoint": str(getattr(self, "last_checkpoint", "")), "world_size": self.world_size,
                   "rank_weight_fingerprints": fingerprints, "replicas_agree": len(set(fingerprints)) == 1}
        if not summary["replicas_agree"] and self.rank == 0:
            logger.error("the ranks' trained weights differ (fingerprints %s): the replicas went apart during "
                         "training; their checkpoints are rank 0's weights", fingerprints)
        summary["bad_clips"] = len({(e["dataset"], e["clip"]) for e in read_bad_clips(self.run_folder.bad_clips)})
        chance = self.chance
        summary["never_left_chance"] = chance is not None and self.best[1] is not None and self.best[1] <= chance
        if self.rank == 0:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            logger.info("done: %d iterations, final loss %s, checkpoint %s", len(history),
                        f"{summary['final_loss']:.4f}" if history else "n/a", summary["checkpoint"])
            if summary["never_left_chance"]:
                logger.warning("validation never left chance: the best %s, %.3f, is not above %.3f (the most frequent "
                               "answer's share plus two standard errors), so the model did not learn the task; %s",
                               self.best[2], self.best[1], chance, why_not_learnt(history))
        return summary


class stop_signals:
    """Within the block, SIGINT, SIGTERM (preemption) and SIGUSR1 (SLURM's warning before the time
    limit, ``--signal=B:USR1@120`` forwarded as examples/slurm does, or ``--signal=USR1@120`` with
    ``srun python train.py``) only note their name in ``received``: the loop checkpoints at the
    end of the current accumulation window and stops, with exit code 128 + the signal's number. A
    second SIGINT stops at once. Outside the main thread (no handlers can be set) signals keep their
    defaults."""

    def __init__(self):
        self.received, self.previous = None, {}

    def _handle(self, signum, frame):
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        logger.warning("%s received: writing a checkpoint after this optimizer step, then stopping "
                       "(Ctrl-C again to stop at once)", self.received)

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
                if signum is not None:
                    self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False


def why_not_learnt(history):
    """What a run whose validation stayed at chance most likely suffered from, read off its losses."""
    losses = [record["loss"] for record in history if "loss" in record]
    tenth = max(1, len(losses) // 10)
    first, last = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth if losses else 0.0
    if losses and last < 0.25 * first:
        return (f"the training loss fell from {first:.2f} to {last:.2f} meanwhile, so it memorised its training clips "
                "(by their backgrounds, say) instead of learning what tells the classes apart: more varied clips, "
                "fewer epochs, or the pretrained full-size path help (docs/streams.md)")
    return "with little data see the README's 'How much data'"


def answer_tokens(batch):
    """Tokens a batch's loss is taken over: the labels that a next-token prediction targets."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def seed_worker(worker_id, base_seed, rank):
    """Each data-loader worker of each rank gets its own seeds (augmentation itself is seeded per
    sample). Workers ignore the stop signals (SIGINT, SIGTERM, SIGUSR1): the main process decides
    when to stop (after writing a checkpoint) and then shuts them down."""
    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
        if signum is not None:
            signal.signal(signum, signal.SIG_IGN)
    seed_everything(base_seed * 1000 + rank * 100 + worker_id)


def autocast_rule(run, device_type):
    """(dtype, enabled, note) of ``run.amp`` / ``run.amp_dtype`` on a ``device_type`` device: CPU
    autocast runs bf16 only. ``note`` tells the user what the CPU makes of the YAML's ask (None on
    a GPU). One rule for the runner and the planner, which simulates the same step."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[run.amp_dtype]
    if not run.amp or device_type != "cpu":
        return dtype, bool(run.amp), None
    if dtype == torch.float16:
        return dtype, False, ("run.amp with amp_dtype=fp16 is not supported on CPU: training in fp32 "
                              "(set run.amp_dtype=bf16 for bf16 autocast on CPU, or run.amp=False)")
    return dtype, True, "run.amp on CPU: bf16 autocast (set run.amp=False for fp32)"


def build_optimizer(model, run_cfg, device_type=None):
    """AdamW; no weight decay on norms, biases and other 1-D parameters. ``run.lr_scales``
    multiplies the learning rate of whole modules (the schedule reads each group's ``lr_scale``).
    ``device_type``: where the step will run (None: where the parameters are)."""
    scales = lr_scales_by_parameter(model, run_cfg.lr_scales)
    groups = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decay = not (param.ndim < 2 or "bias" in name or "norm" in name.lower())
            key = (decay, scales.get(name, 1.0))
            groups.setdefault(key, {"params": [], "weight_decay": run_cfg.weight_decay if decay else 0.0,
                                    "lr_scale": key[1]})["params"].append(param)
    # on the CPU the fused kernel steps a tiny model's many small tensors faster (a quickstart
    # training step, one thread: 55 -> 50 ms); elsewhere torch's default
    on_cpu = all((device_type or p.device.type) == "cpu" for group in groups.values() for p in group["params"])
    fused = True if groups and on_cpu else None
    foreach = True if groups and not on_cpu else None  # what torch picks on a GPU; said, so a planned step does it too
    return torch.optim.AdamW(list(groups.values()), lr=run_cfg.init_lr, betas=(0.9, run_cfg.beta2), fused=fused,
                             foreach=foreach)


def lr_scales_by_parameter(model, lr_scales):
    """{parameter name: multiplier} from ``run.lr_scales`` ({module name: multiplier}); the longest
    module name that contains a parameter wins. A name that matches no trainable parameter is an
    error, so that a typo cannot silently train at the wrong rate."""
    lr_scales = dict(lr_scales or {})
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    scales = {}
    for module in sorted(lr_scales, key=len):  # longer (more specific) names overwrite shorter ones
        matched = [n for n in trainable if n == module or n.startswith(module + ".")]
        if not matched:
            modules = sorted({n.split(".")[0] for n in trainable})
            raise ConfigError([f"run.lr_scales.{module}: no trainable parameter is in a module of that name; "
                               f"trainable top-level modules: {modules}"])
        scales.update(dict.fromkeys(matched, float(lr_scales[module])))
    return scales
