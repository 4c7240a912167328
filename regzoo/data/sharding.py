"""Who reads what: the split of a dataset over DDP processes (ranks) and DataLoader workers.

Two rules, one per purpose:
- **evaluation**: every image exactly once over all ranks and workers, with no padding and no dropped tail,
  so that summed counts are the single-process counts. A map-style dataset gives rank r of W the indices
  ``r::W``; a stream of shards gives each (rank, worker) reader whole shards when there are at least as many
  shards as readers, else every reader walks all shards and keeps the samples at its own positions
  (``position % readers == reader``): more reading, the same partition.
- **training**: an epoch's shard order is a permutation seeded by (seed, epoch); rank r of W takes shards
  ``order[r::W]`` and worker k of K of that rank takes ``[k::K]`` of those, so each shard (and so each sample)
  is read once per epoch, whatever W and K are; inside its shards a reader shuffles with a buffer seeded by
  (seed, epoch, rank, worker). A resumed run restarts at an epoch boundary: the order of epoch e is a
  function of (seed, e) alone, while the position inside a stream is not recorded.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Reader:
    """One reader of a dataset: DDP rank ``rank`` of ``world``, DataLoader worker ``worker`` of ``workers``."""
    rank: int = 0
    world: int = 1
    worker: int = 0
    workers: int = 1

    @property
    def index(self) -> int:
        """This reader's place among all ``count`` readers (rank-major)."""
        return self.rank * self.workers + self.worker

    @property
    def count(self) -> int:
        return self.world * self.workers


def process_rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed process group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def current_reader(rank: int, world: int) -> Reader:
    """The reader running this code: the given process slot and, inside a DataLoader worker, that worker."""
    info = torch.utils.data.get_worker_info()
    return Reader(rank, world, info.id if info else 0, info.num_workers if info else 1)


def rank_indices(length: int, rank: int, world: int) -> range:
    """A map-style dataset's indices for ``rank`` of ``world``: ``rank::world``, a partition of ``range(length)``."""
    return range(rank, length, world)


def eval_reads_whole_shards(num_shards: int, reader: Reader, num_samples: int | None = None) -> bool:
    """Whether readers take whole shards (enough shards for every reader, no first-N cut) or positions."""
    return num_samples is None and num_shards >= reader.count


def epoch_shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """The shard order of one training epoch: a permutation of ``range(num_shards)`` seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_shards).tolist()


def reader_shards(order: Sequence[int], reader: Reader) -> list[int]:
    """The shards of ``order`` that ``reader`` reads: its rank's ``[rank::world]``, then its worker's share."""
    return list(order[reader.rank::reader.world][reader.worker::reader.workers])


def shuffle_seed(seed: int, epoch: int, reader: Reader) -> int:
    """The seed of a reader's in-shard shuffle buffer in one epoch (a function of seed, epoch, rank, worker)."""
    return int(np.random.SeedSequence([seed, epoch, reader.rank, reader.worker]).generate_state(1)[0])


def gather_objects(obj) -> list:
    """``obj`` from every process of the initialised process group, in rank order; ``[obj]`` without one."""
    rank, world = process_rank_world()
    if world == 1:
        return [obj]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def join_process_group(device: str) -> tuple[int, str]:
    """Under torchrun (WORLD_SIZE > 1), join the process group (nccl for CUDA, gloo otherwise); returns
    (rank, this process's device: ``cuda`` becomes ``cuda:LOCAL_RANK``). One process: (0, device)."""
    if int(os.environ.get('WORLD_SIZE', 1)) <= 1:
        return 0, device
    if device == 'cuda':
        device = f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}'
    if not torch.distributed.is_initialized():
        cuda = torch.device(device).type == 'cuda'
        if cuda:
            torch.cuda.set_device(torch.device(device))
        torch.distributed.init_process_group(backend='nccl' if cuda else 'gloo')
    return torch.distributed.get_rank(), device


def leave_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
