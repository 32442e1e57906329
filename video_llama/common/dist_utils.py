"""Process-group set-up from the launcher's environment, and guarded collectives.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; those win over SLURM's variables (under
``srun torchrun`` ``SLURM_PROCID`` is the node index, not the rank) and over ``run.world_size``.
A single process needs no process group: every helper here works without one.
"""

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def _launcher_env():
    """(rank, local_rank, world_size, launcher) from torchrun, else from a plain srun, else None."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]), "torchrun"
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        # `srun python train.py`: one task per process; needs MASTER_ADDR/MASTER_PORT for env://.
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"]), "srun"
    return None


def device_for(run_cfg, local_rank):
    """This process's device: its own GPU (``cuda:LOCAL_RANK``) when run.device is cuda."""
    return f"cuda:{local_rank}" if str(run_cfg.device).startswith("cuda") else "cpu"


def cpu_threads(run_cfg):
    """Torch threads for a CPU run: ``run.cpu_threads``, else ``OMP_NUM_THREADS``, else the cores
    this process's share leaves after its data-loader workers (each decodes on one core).

    PyTorch's default (every core) oversubscribes the CPU once workers decode alongside: on 2 cores
    with 2 workers a one-epoch quickstart run took 38 s instead of 28 s.
    """
    if run_cfg.cpu_threads:
        return int(run_cfg.cpu_threads)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, cores // processes_here - run_cfg.num_workers)


def init_distributed_mode(run_cfg):
    """Initialise the process group when launched with more than one process.

    NCCL on GPUs, gloo on CPUs. Returns a :class:`DistInfo` (rank, world size, device).
    """
    launched = _launcher_env()
    rank, local_rank, world_size, launcher = launched or (0, 0, 1, None)
    if run_cfg.world_size != world_size:
        logger.warning("run.world_size is %s but %s started %d process(es); the launcher wins",
                       run_cfg.world_size, launcher or "this launch (no torchrun)", world_size)
    device = device_for(run_cfg, local_rank)
    use_cuda = device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(cpu_threads(run_cfg))
    if world_size > 1:
        if not run_cfg.distributed:
            from video_llama.common.config import ConfigError

            raise ConfigError([f"{world_size} processes were launched but run.distributed is False; "
                               "set run.distributed=True or launch a single process"])
        if launcher == "srun":
            os.environ.setdefault("RANK", str(rank))
            os.environ.setdefault("WORLD_SIZE", str(world_size))
            os.environ.setdefault("LOCAL_RANK", str(local_rank))
        backend, timeout = "nccl" if use_cuda else "gloo", datetime.timedelta(minutes=30)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if attempt is not None and run_cfg.dist_url == "env://":
            # torchrun's agent keeps one store across the restarts of a group (--max-restarts): keys
            # of this attempt apart, so no rank reads a peer address the killed attempt left there
            store, rank, world_size = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
            dist.init_process_group(backend=backend, store=dist.PrefixStore(f"attempt_{attempt}", store),
                                    world_size=world_size, rank=rank, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, init_method=run_cfg.dist_url, world_size=world_size,
                                    rank=rank, timeout=timeout)
        logger.info("process group: rank %d of %d (%s, %s)", rank, world_size, dist.get_backend(), device)
    return DistInfo(rank, local_rank, world_size, device)


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def is_main_process():
    return get_rank() == 0


def barrier():
    if is_dist():
        dist.barrier()


def all_gather_object(obj):
    """[obj of rank 0, obj of rank 1, ...]; just [obj] in a single process."""
    if not is_dist():
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(value):
    """Sum over all ranks of a number, or of each number of a list (one collective either way)."""
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
    if is_dist():
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        values = tensor.tolist()
    return values if isinstance(value, (list, tuple)) else values[0]


def all_reduce_mean(value):
    """Mean of a number over all ranks."""
    return all_reduce_sum(value) / get_world_size()


def destroy():
    if is_dist():
        dist.destroy_process_group()


def set_cpu_threads(run_cfg, threads=None):
    """Torch's CPU threads for a selector: ``threads``, else on the CPU as training sets them
    (``cpu_threads``): torch's default, every core, crawls beside other work."""
    if threads or device_for(run_cfg, 0) == "cpu":
        torch.set_num_threads(threads or cpu_threads(run_cfg))
