"""Process-group plumbing for ``torchrun``: the same command trains on one process or many.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK (and MASTER_ADDR/PORT); a plain ``python`` run has
none of them and gets a single-process context. CUDA ranks use NCCL and the GPU LOCAL_RANK; CPU
ranks use gloo. Only rank 0 writes files, logs and shows progress.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ['DistContext', 'setup_distributed', 'resolve_train_device']


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')
    backend: str | None = None      # None = not distributed

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.distributed:
            dist.barrier()

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over ranks of a float tensor (a copy; the input is unchanged)."""
        if not self.distributed:
            return values
        v = values.detach().clone().to(self.device if self.backend == 'nccl' else 'cpu')
        dist.all_reduce(v, op=dist.ReduceOp.SUM)
        return v / self.world_size

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        if not self.distributed:
            return values
        v = values.detach().clone().to(self.device if self.backend == 'nccl' else 'cpu')
        dist.all_reduce(v, op=dist.ReduceOp.SUM)
        return v

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is True on any rank (all ranks must call)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0],
                         device=self.device if self.backend == 'nccl' else 'cpu')
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def shutdown(self):
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def resolve_train_device(device: str, local_rank: int = 0) -> torch.device:
    """'auto' -> CUDA (cuda:LOCAL_RANK) when available, else CPU; 'cuda' -> cuda:LOCAL_RANK."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda'):
        if not torch.cuda.is_available():
            raise ValueError(f'device {device!r} requested but CUDA is not available '
                             '(use --device cpu or auto)')
        if device == 'cuda':
            device = f'cuda:{local_rank}'
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f'device {device} does not exist ({torch.cuda.device_count()} GPU(s))')
        return dev
    return torch.device('cpu')


def setup_distributed(device: str = 'auto') -> DistContext:
    """Read torchrun's environment; initialise the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get('WORLD_SIZE', '1') or 1)
    rank = int(os.environ.get('RANK', '0') or 0)
    local = int(os.environ.get('LOCAL_RANK', '0') or 0)
    dev = resolve_train_device(device, local)
    if world <= 1:
        return DistContext(0, 1, 0, dev, None)
    backend = 'nccl' if dev.type == 'cuda' else 'gloo'
    if dev.type == 'cuda':
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, dev, backend)
