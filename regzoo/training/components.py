"""Model, optimizer, schedule, loss, mixup and EMA from the resolved args, all through timm/regzoo."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from regzoo.training.args import SHORT_WARMUP_EPOCHS
from regzoo.training.errors import TrainingInputError
from regzoo.zoo.builder import create_model
from regzoo.zoo.fetch import WeightsUnavailableError


def build_model(args, num_classes: int, resume_weights: str | os.PathLike | None = None) -> nn.Module:
    """The model through ``create_model``: a resumed run's own weights, else --initial-checkpoint / --pretrained.

    ``args``: the resolved args (a Namespace or a ``RunConfig``). A resume never fetches the weights its run
    started from (--pretrained, --initial-checkpoint stay in the resumed args): they were trained past, and may
    be gone or offline by now.
    """
    kwargs = {**(args.model_kwargs or {}), 'num_classes': num_classes, 'drop_rate': args.drop,
              'drop_path_rate': args.drop_path, 'zero_init_last': args.zero_init_last}
    pretrained = args.pretrained and resume_weights is None
    source = f'--model {args.model}'
    if resume_weights is not None or args.initial_checkpoint:
        kwargs['checkpoint_path'] = resume_weights or args.initial_checkpoint
        source += f' with {"--resume" if resume_weights else "--initial-checkpoint"} {kwargs["checkpoint_path"]}'
    try:
        return create_model(args.model, pretrained=pretrained, **kwargs)
    except TypeError as e:  # an unknown create_model kwarg (--model-kwargs, or a checkpoint's model_args)
        raise TrainingInputError(f'{source}: {e}' + (' (check --model-kwargs)' if args.model_kwargs else '')) from None
    except WeightsUnavailableError as e:
        # the library's message lists every place it looked and gives a fix for Python callers; on the command
        # line the fix is a flag
        raise TrainingInputError(e.command_line_message('--initial-checkpoint', args.model)) from None
    except (ValueError, OSError) as e:  # unknown model name (with close matches), unreadable or missing weights
        # the library's messages may start with the model name: say it once, after the flag
        raise TrainingInputError(f'{source}: {str(e).removeprefix(f"{args.model}: ")}') from None


def create_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """timm optimizer; with decay_norm_bias (pycls) every parameter decays, else norm/bias are exempt (timm)."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                               momentum=args.momentum, filter_bias_and_bn=not args.decay_norm_bias)


@dataclass(frozen=True)
class LrSchedule:
    """When the lr changes: what ``create_scheduler`` builds and the plan prints (one source for both)."""
    per_update: bool          # stepped every update (else every epoch)
    warmup_updates: int       # per update: the warmup's length in updates (0: none)
    total_updates: int

    def describe(self, args) -> str:
        """', warmup ...' for the plan (empty without warmup)."""
        if not args.warmup_epochs:
            return ''
        if not self.per_update:
            return f', warmup {args.warmup_epochs} epoch(s) from lr {args.warmup_lr:.3g} (stepped per epoch)'
        if not self.warmup_updates:
            return f", no warmup (the run's {self.total_updates} update(s) are too few for one)"
        return (f', warmup {self.warmup_updates} update(s) from lr {args.warmup_lr:.3g} up to lr {args.lr:.6g} '
                '(stepped per update)')


def epoch_updates(args, updates_per_epoch: int, epoch: int) -> int:
    """The updates ``epoch`` trains: all of them, except in a last epoch cut short (--last-epoch-updates)."""
    if epoch == args.epochs - 1 and args.last_epoch_updates:
        return min(args.last_epoch_updates, updates_per_epoch)
    return updates_per_epoch


def last_epoch_cut(args, updates_per_epoch: int) -> int | None:
    """The updates of a last epoch cut short, None when it is whole (what the plan and the last line say)."""
    last = epoch_updates(args, updates_per_epoch, args.epochs - 1)
    return last if last < updates_per_epoch else None


def lr_schedule(args, updates_per_epoch: int) -> LrSchedule:
    """Per update when asked (--sched-on-updates) or, by default, when the warmup is short (1 to
    ``SHORT_WARMUP_EPOCHS`` epochs); a per-update warmup takes at most half the run's updates, so the run reaches
    the lr its plan prints even when it is no longer than the warmup (the 1-epoch fine-tune demo)."""
    per_update = args.sched_on_updates
    if per_update is None:
        per_update = 0 < args.warmup_epochs <= SHORT_WARMUP_EPOCHS
    total = (args.epochs - 1) * updates_per_epoch + epoch_updates(args, updates_per_epoch, args.epochs - 1)
    warmup = min(args.warmup_epochs * updates_per_epoch, total // 2) if per_update else 0
    return LrSchedule(bool(per_update), warmup, total)


def create_scheduler(optimizer: torch.optim.Optimizer, args, updates_per_epoch: int):
    """timm schedule. Per epoch (pycls): the warmup is linear from warmup_lr and not a prefix, so cosine spans all
    epochs. Per update: the warmup ramps from warmup_lr to lr over its updates, as a prefix (it ends at lr
    exactly), and the schedule spans the updates after it."""
    from timm.scheduler import create_scheduler_v2

    plan = lr_schedule(args, updates_per_epoch)
    if not plan.per_update:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
            decay_rate=args.decay_rate, min_lr=args.min_lr, warmup_lr=args.warmup_lr,
            warmup_epochs=args.warmup_epochs, cooldown_epochs=args.cooldown_epochs, step_on_epochs=True,
            updates_per_epoch=updates_per_epoch)
        return scheduler
    # everything in updates: timm's schedule of one update per "epoch"
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=max(plan.total_updates - plan.warmup_updates, 1),
        decay_epochs=max(round(args.decay_epochs * updates_per_epoch), 1), decay_rate=args.decay_rate,
        min_lr=args.min_lr, warmup_lr=args.warmup_lr, warmup_epochs=plan.warmup_updates, warmup_prefix=True,
        cooldown_epochs=args.cooldown_epochs * updates_per_epoch, step_on_epochs=False, updates_per_epoch=1)
    return scheduler


def create_mixup(args: argparse.Namespace):
    if not (args.mixup > 0 or args.cutmix > 0):
        return None
    if args.batch_size % 2:
        raise TrainingInputError(
            f'mixup/cutmix pairs images within a batch: --batch-size {args.batch_size} must be even')
    from timm.data import Mixup

    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                 switch_prob=args.mixup_switch_prob, mode=args.mixup_mode, label_smoothing=args.smoothing,
                 num_classes=args.num_classes)


def create_loss(args: argparse.Namespace, mixup) -> nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup is not None:  # mixup already smooths the targets it mixes
        return SoftTargetCrossEntropy()
    if args.smoothing:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return nn.CrossEntropyLoss()


def create_ema(model: nn.Module, args: argparse.Namespace):
    if not args.model_ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup)


def convert_sync_bn(model: nn.Module, device: torch.device, distributed: bool) -> nn.Module:
    if device.type != 'cuda':
        raise TrainingInputError('--sync-bn needs CUDA: torch SyncBatchNorm has no CPU kernel '
                                 '(use --grad-accum-steps, or a larger per-process batch, on CPU)')
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if distributed else model
