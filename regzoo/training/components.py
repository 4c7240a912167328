"""Model, optimizer, schedule, loss, mixup and EMA from the resolved args, all through timm/regzoo."""
from __future__ import annotations

import argparse
import os

import torch
import torch.nn as nn

from regzoo.training.errors import TrainingInputError
from regzoo.zoo.builder import create_model


def build_model(args: argparse.Namespace, resume_weights: str | os.PathLike | None = None) -> nn.Module:
    """The model through ``create_model``: a resumed run's own weights, else --initial-checkpoint / --pretrained.

    A resume never fetches the weights its run started from (--pretrained, --initial-checkpoint stay in
    the resumed args): they were trained past, and may be gone or offline by now.
    """
    kwargs = {**(args.model_kwargs or {}), 'num_classes': args.num_classes, 'drop_rate': args.drop,
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
    except (ValueError, OSError) as e:  # unknown model name (with close matches), unreadable or missing weights
        raise TrainingInputError(f'{source}: {e}') from None


def create_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """timm optimizer; with decay_norm_bias (pycls) every parameter decays, else norm/bias are exempt (timm)."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                               momentum=args.momentum, filter_bias_and_bn=not args.decay_norm_bias)


def create_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, updates_per_epoch: int):
    """timm schedule; warmup is linear from warmup_lr and not a prefix, so cosine spans all epochs (pycls)."""
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
        decay_rate=args.decay_rate, min_lr=args.min_lr, warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs,
        cooldown_epochs=args.cooldown_epochs, step_on_epochs=not args.sched_on_updates,
        updates_per_epoch=updates_per_epoch)
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
