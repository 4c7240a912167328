"""One training epoch, and the validation pass after it (the eval package's top-k loop, reduced over processes)."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from regzoo.eval.loop import count_topk
from regzoo.training.components import LrSchedule, epoch_updates
from regzoo.training.config import RunConfig
from regzoo.training.distributed import DistInfo, all_reduce_sum, any_process
from regzoo.training.loaders import GlobalBatchSampler, mix_seed, seed_all, train_transform
from regzoo.utils.runtime import Progress, is_terminal
from regzoo.utils.timing import Stopwatch


@dataclass(frozen=True)
class TrainParts:
    """Everything an epoch touches; built once by the run's setup step."""
    cfg: RunConfig
    info: DistInfo
    model: nn.Module          # the bare model (EMA source, checkpoint source)
    train_model: nn.Module    # the model wrapped in DDP when distributed, else the same module
    optimizer: torch.optim.Optimizer
    scheduler: object         # a timm Scheduler
    schedule: LrSchedule      # whether it steps per update
    loss_fn: nn.Module
    mixup: Callable | None
    ema: nn.Module | None     # timm ModelEmaV3
    loader: torch.utils.data.DataLoader
    sampler: GlobalBatchSampler     # or, for shards, a ShardEpochs (``regzoo.training.splits``)
    train_data: object        # what holds the train ``transform`` (set per epoch: ``--train-sizes``)
    scaler: torch.amp.GradScaler | None


@dataclass(frozen=True)
class EpochResult:
    loss_sum: float           # summed over every image of the epoch, all processes
    images: int
    seconds: float
    updates_done: int         # updates of this epoch done when it returned
    global_update: int
    stopped: bool             # a stop signal ended it early
    lr: float                 # the lr of its last update


def autocast(cfg, device: torch.device):
    if not cfg.amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, cfg.amp_dtype))


def train_one_epoch(parts: TrainParts, *, epoch: int, start_update: int = 0, global_update: int,
                    loss_sum: float = 0.0, images: int = 0, stop_requested: Callable[[], int],
                    log: Callable[[str], None]) -> EpochResult:
    """Run the updates ``start_update..`` of ``epoch`` (``global_update`` done before it; ``loss_sum`` and
    ``images`` of the updates before ``start_update``, for a resumed epoch); returns early (stopped=True) on a
    stop signal."""
    cfg, info, sampler = parts.cfg, parts.info, parts.sampler
    accum = cfg.grad_accum_steps
    parts.train_model.train()
    sampler.set_epoch(epoch, start_update * accum)
    # this epoch's train size; the loader's workers start below, with it (they are not persistent)
    parts.train_data.transform = train_transform(cfg, cfg.epoch_sizes[epoch])
    batches = iter(parts.loader)
    updates = epoch_updates(cfg, sampler.updates_per_epoch, epoch)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    # a bar on the primary's terminal; log lines otherwise, and also when stdout goes elsewhere than the bar
    progress = Progress(updates, f'epoch {epoch}', unit='update', initial=start_update, every=cfg.log_interval,
                        enabled=None if info.is_primary else False, log=log, leave=False,
                        log_with_bar=not is_terminal(sys.stdout))
    local_loss, local_images = 0.0, 0
    lr = parts.optimizer.param_groups[0]['lr']
    watch = Stopwatch()
    with watch, progress:
        for update in range(start_update, updates):
            for micro in range(accum):
                batch = next(batches, None)
                # a stream can run dry on one rank before the planned updates: every rank stops together, before
                # a forward whose gradient all-reduce the others would never join
                if sampler.restarts_epochs and any_process(batch is None, info):
                    parts.optimizer.zero_grad(set_to_none=True)
                    return _result(loss_sum, images, local_loss, local_images, watch.elapsed(), updates,
                                   global_update, False, lr, info)
                x, y = batch
                # drop-path and mixup draw from the global RNGs: seed them per step so a resumed run repeats them
                seed_all(mix_seed(cfg.seed, info.rank, epoch, update, micro))
                x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
                if parts.mixup is not None:
                    x, y = parts.mixup(x, y)
                x = x.contiguous(memory_format=memory_format)
                last_micro = micro == accum - 1
                no_sync = parts.train_model.no_sync if info.distributed and not last_micro else contextlib.nullcontext
                with no_sync():
                    with autocast(cfg, info.device):
                        loss = parts.loss_fn(parts.train_model(x), y)
                    scaled = loss / accum
                    (parts.scaler.scale(scaled) if parts.scaler else scaled).backward()
                local_loss += loss.item() * x.shape[0]
                local_images += x.shape[0]
            # the lr this update used (a per-update schedule sets the next one below)
            lr = parts.optimizer.param_groups[0]['lr']
            if parts.scaler:
                parts.scaler.unscale_(parts.optimizer)
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_(parts.model.parameters(), cfg.clip_grad)
            if parts.scaler:
                parts.scaler.step(parts.optimizer)
                parts.scaler.update()
            else:
                parts.optimizer.step()
            parts.optimizer.zero_grad(set_to_none=True)
            global_update += 1
            if parts.ema is not None:
                parts.ema.update(parts.model, step=global_update)
            if parts.schedule.per_update:
                parts.scheduler.step_update(num_updates=global_update)
            step_loss = loss.item()
            progress.update(1, loss=f'{step_loss:.3f}', lr=f'{lr:.3g}', line=lambda: (
                f'train epoch {epoch} update {progress.count}/{updates} loss {step_loss:.4f} lr {lr:.6g}'))
            if any_process(bool(stop_requested()), info):
                return _result(loss_sum, images, local_loss, local_images, watch.elapsed(), update + 1,
                               global_update, True, lr, info)
    return _result(loss_sum, images, local_loss, local_images, watch.seconds, updates, global_update, False,
                   lr, info)


def _result(loss_sum, images, local_loss, local_images, seconds, done, global_update, stopped, lr,
            info) -> EpochResult:
    total_loss, total_images = all_reduce_sum([local_loss, float(local_images)], info)
    return EpochResult(loss_sum + total_loss, images + int(total_images), seconds, done,
                       global_update, stopped, lr)


def validate_epoch(model: nn.Module, loader, cfg, info: DistInfo) -> dict[str, float]:
    """Loss, top-1 and top-5 (%) over the whole val split: each process counts its shard with the eval
    loop, then the sums are added up over processes before dividing."""
    model.eval()
    counts = count_topk(
        model, loader, info.device, amp_dtype=getattr(torch, cfg.amp_dtype) if cfg.amp else None,
        memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format,
        criterion=nn.CrossEntropyLoss(reduction='sum'))
    loss, top1, top5, n = all_reduce_sum(
        [counts.loss_sum, float(counts.correct1), float(counts.correct5), float(counts.num_images)], info)
    return {'loss': loss / n, 'top1': 100 * top1 / n, 'top5': 100 * top5 / n}
