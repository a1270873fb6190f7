"""Where a training run computes: its device, and its place among torchrun's processes.

``device`` in the run config picks the device: ``auto`` takes a CUDA GPU when torch sees one,
else the CPU. Started by ``torchrun --nproc_per_node N -m trainer ...``, the run is one of the
data-parallel processes that torchrun's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE`` describe: they train one model together through
``DistributedDataParallel`` (gloo on CPUs, NCCL on GPUs), and rank 0 alone validates,
evaluates, gates and publishes while the others wait for it.

``batch_size`` stays the batch of one optimizer step, over all processes together (each takes
every N-th row of it, :meth:`Compute.share`), so one config is one recipe whatever N: the same
rows per step, the same number of steps and learning-rate schedule, and the same gradient up to
float rounding and dropout draws. More processes make each step cheaper, not the batch larger.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.config import ConfigError, TrainConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

# The longest any process waits in one collective (init included) before it fails: long enough
# for rank 0 to validate an epoch or to evaluate and publish while the others wait, short enough
# that a hung peer does not hold the job for ever. A dead peer fails its partners at once (gloo
# and NCCL see the connection close, and torchrun stops the job); this is the backstop.
COLLECTIVE_TIMEOUT = dt.timedelta(minutes=30)
# The processes' weights after training: bitwise equal on one machine; across machines the
# float rounding of reductions may differ (thread counts, CPU or GPU models), nothing more.
SAME_WEIGHTS_ATOL = 1e-4


def _cpu() -> torch.device:
    return torch.device("cpu")


@dataclass(frozen=True)
class Compute:
    """This process's device and its rank among ``world_size`` data-parallel processes."""

    device: torch.device = field(default_factory=_cpu)
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, evaluates, gates and publishes."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """What training calls forward on: ``model`` itself, or its DDP wrapper."""
        if not self.distributed:
            return model
        # The encoder's buffers (position and token-type ids) never change: no sync per step.
        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            forward_sync_buffers=False,
        )

    def share(self, batch: list[int]) -> tuple[list[int], float]:
        """This process's rows of a global batch, and the factor for their mean loss that makes
        DDP's average of the processes' gradients the gradient of the whole batch's mean loss."""
        if not self.distributed:
            return batch, 1.0
        rows = batch[self.rank :: self.world_size]
        if not rows:  # a last batch smaller than the world: take part in the step, add nothing
            return batch[:1], 0.0
        return rows, len(rows) * self.world_size / len(batch)

    def total(self, value: float) -> float:
        """``value`` summed over the processes."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value``, in every process (what the others pass is ignored)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` on rank 0 only; every process returns its result or raises its error
        (so a failure there stops every rank, none waits for it)."""
        if not self.distributed:
            return work()
        outcome: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = [(True, work())]
            except Exception as exc:
                error = exc
                outcome = [(False, exc)]
        dist.broadcast_object_list(outcome, src=0)
        ok, value = outcome[0]
        if error is not None:
            raise error
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def barrier(self) -> None:
        """Wait until every process gets here (fails if one died)."""
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    @torch.no_grad()
    def check_in(self, model: nn.Module) -> None:
        """Every process has finished training and holds the same trainable weights (within
        float rounding); raise otherwise. Rank 0 publishes only after this: a run that lost a
        process, or whose processes drifted apart, publishes nothing."""
        if not self.distributed:
            return
        params = [p.detach().flatten() for p in model.parameters() if p.requires_grad]
        mine = torch.cat(params)
        mean = mine.clone()
        dist.all_reduce(mean)
        gap = (mine - mean / self.world_size).abs().max().reshape(1)
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        if not gap.item() <= SAME_WEIGHTS_ATOL:
            raise RuntimeError(
                f"the {self.world_size} training processes ended with different weights (up to "
                f"{gap.item():.2e} apart); nothing published"
            )
        log.info("all %d processes finished training with the same weights", self.world_size)


def launch_env() -> tuple[int, int, int, int]:
    """``(rank, world_size, local_rank, local_world_size)`` from torchrun's variables; a plain
    ``python -m trainer`` has none and is ``(0, 1, 0, 1)``."""
    world = os.environ.get("WORLD_SIZE", "1")
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": world}
    values = []
    for name, default in defaults.items():
        raw = os.environ.get(name, default)
        try:
            values.append(int(raw))
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None
    rank, world_size, local_rank, local_world_size = values
    return rank, world_size, local_rank, local_world_size


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    """The device ``device: auto|cpu|cuda`` means here; under torchrun a process's GPU is the
    one of its local rank."""
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            "device: cuda, but torch sees no CUDA GPU (torch.cuda.is_available() is false; "
            f"torch {torch.__version__}); use device: auto or cpu"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"local rank {local_rank} has no GPU of its own: this machine has {count}; start at "
            "most one process per GPU (torchrun --nproc_per_node) or set device: cpu"
        )
    return torch.device("cuda", local_rank)


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def torch_threads(configured: int, world_size: int, local_world_size: int) -> int:
    """torch's CPU threads per process: the config's, else, for one of N data-parallel
    processes on this machine, its cores divided by N (0: torch's default, all cores)."""
    if configured or world_size == 1:
        return configured
    return max(1, cpu_cores() // local_world_size)


class _RankFields(logging.Filter):
    """Adds ``rank`` and ``world_size`` to every record (text lines show them in brackets)."""

    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank, record.world_size = self.rank, self.world_size
        return True


@contextlib.contextmanager
def start_compute(config: TrainConfig) -> Iterator[Compute]:
    """Pick the device and torch's thread count; under torchrun join the process group (left
    again on a clean exit; on an error the process just exits, as its peers may be gone)."""
    rank, world_size, local_rank, local_world_size = launch_env()
    device = resolve_device(config.device, local_rank)
    threads = torch_threads(config.threads, world_size, local_world_size)
    if threads:
        torch.set_num_threads(threads)
    compute = Compute(device, rank, world_size)
    if not compute.distributed:
        log.info("computing on %s, %d torch threads", device, torch.get_num_threads())
        yield compute
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    fields = _RankFields(rank, world_size)
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(fields)
    try:
        log.info(
            "data-parallel training: rank %d of %d (local rank %d of %d), %s on %s, %d torch "
            "threads; batch_size %d is the global batch, about %d rows per process",
            rank,
            world_size,
            local_rank,
            local_world_size,
            backend,
            device,
            torch.get_num_threads(),
            config.batch_size,
            -(-config.batch_size // world_size),
        )
        yield compute
        dist.destroy_process_group()
    finally:
        for handler in handlers:
            handler.removeFilter(fields)
