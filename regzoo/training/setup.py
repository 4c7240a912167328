"""The setup step of a run: from the resolved args to the run config, model, data and everything an epoch needs.

Errors here are the run's start failing: nothing has been written yet (the run folder is written by
``write_run_files`` only once this step succeeded).
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from regzoo.data.locate import SplitLocation
from regzoo.training.args import BATCH_SENSITIVE_RECIPES, load_recipe, resolve_args
from regzoo.training.checkpoint import run_pretrained_cfg
from regzoo.training.components import (
    build_model,
    convert_sync_bn,
    create_ema,
    create_loss,
    create_mixup,
    create_optimizer,
    create_scheduler,
    last_epoch_cut,
    lr_schedule,
)
from regzoo.training.config import RunConfig
from regzoo.training.distributed import DistInfo, all_reduce_sum
from regzoo.training.engine import TrainParts
from regzoo.training.errors import TrainingInputError
from regzoo.training import budget, sizes
from regzoo.training.engine import autocast
from regzoo.training.loaders import (
    SeededTransformDataset,
    mix_seed,
    run_data_config,
    seed_all,
    sized_data_config,
    train_transform,
    train_loader,
    train_sampler,
    unreadable_images,
    val_indices,
    val_loader,
)
from regzoo.training.splits import Splits, count_shard_samples, eval_split_loader, load_splits, stream_loader
from regzoo.utils.files import unwritable_reason
from regzoo.zoo.pretrained import PretrainedCfg


SHOWN_UNREADABLE = 5  # unreadable val images named one per line; the rest are counted


@dataclass(frozen=True)
class Resumed:
    """What ``--resume`` read: the weights file the model is built from and the training state."""
    weights_path: Path
    state: dict[str, Any]


@dataclass(frozen=True)
class Run:
    """A run after its setup step: the config, the parts of an epoch and where it writes."""
    cfg: RunConfig
    info: DistInfo
    parts: TrainParts
    evaluation: torch.utils.data.DataLoader
    run_dir: Path
    model_cfg: PretrainedCfg        # the pretrained cfg every weights file of the run carries (config.json)
    class_names: tuple[str, ...] | None   # None: the data's labels are classifier indices
    plan: tuple[str, ...]           # printed before the first epoch
    resumed: Resumed | None


def warn(message: str) -> None:
    print(f'train.py: warning: {message}', file=sys.stderr, flush=True)


def _resumed_dir(resume: str) -> Path:
    p = Path(resume)
    return p if p.is_dir() else p.parent


def _named_run_dir(args) -> Path | None:
    """The run folder when the args name it (--experiment, or a resumed run's own folder), else None."""
    if args.resume and 'experiment' not in args.cli_keys and 'output' not in args.cli_keys:
        return _resumed_dir(args.resume)  # continue in the resumed run's folder
    return Path(args.output) / args.experiment if args.experiment else None


def _run_dir(args, train_size: tuple[int, int]) -> Path:
    return _named_run_dir(args) or Path(args.output) / f'{time.strftime("%Y%m%d-%H%M%S")}-{args.model}-{train_size[0]}'


def refuse_used_run_dir(run_dir: Path | None, args, resumed: Resumed | None) -> None:
    """A folder that already holds files is another run's: written over only with --overwrite (or continued)."""
    if run_dir is None or args.overwrite or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if resumed is not None and run_dir.resolve() == _resumed_dir(args.resume).resolve():
        return  # a resume continues in its own folder
    raise TrainingInputError(f'run folder {run_dir} already holds files; continue that run with --resume {run_dir}, '
                             'replace it with --overwrite, or choose a new --experiment NAME')


def _starting_cfg(args, model, resumed: Resumed | None) -> tuple[object, str]:
    """The eval settings the run's own default to, and where they come from (for the plan).

    A resumed run keeps the ones it resolved when it started (its saved args); a run from a weight takes that
    weight's (``model.pretrained_cfg``: the published cfg, or the config.json saved with a checkpoint);
    otherwise there are none, and train.py's defaults apply.
    """
    if resumed:
        saved = resumed.state['args']
        if saved.get('data_config') and saved.get('train_size'):
            # the size --img-size resolved to: what --train-sizes / --test-img-size fractions refer to
            data, size = saved['data_config'], saved.get('size_base') or saved['train_size']
            return {**data, 'input_size': (data['input_size'][0], *size),
                    'test_input_size': data['input_size']}, 'the resumed run'
        return None, "train.py's defaults"
    if args.pretrained or args.initial_checkpoint:
        cfg = getattr(model, 'pretrained_cfg', None)
        what = f'--initial-checkpoint {args.initial_checkpoint}' if args.initial_checkpoint else '--pretrained'
        if cfg is not None:
            return cfg, f'the starting weight\'s ({what})'
        return None, f'train.py\'s defaults ({what} carries no eval settings)'
    return None, "train.py's defaults"


def _plan(cfg: RunConfig, model, splits: Splits, parts: TrainParts, eval_source: str, run_dir: Path,
          resumed: Resumed | None, budget_line: str | None) -> tuple[str, ...]:
    """What the run is about to do, printed before it starts."""
    data = cfg.data_config
    if resumed:
        start = f'resuming {cfg.resume}'
    elif cfg.initial_checkpoint:
        start = f'from --initial-checkpoint {cfg.initial_checkpoint}'
    elif cfg.pretrained:
        start = f'from the pretrained weight {model.pretrained_cfg.name}'
    else:
        start = 'from random init'
    size = 'x'.join(map(str, data['input_size'][1:]))
    crops = 'x'.join(map(str, cfg.train_size)) if cfg.train_sizes is None else sizes.describe(cfg.epoch_sizes)
    return (
        f'plan ({"recipe " + cfg.recipe if cfg.recipe else "no recipe"}):',
        f'  model     {cfg.model}, {model.num_classes} classes, {start}',
        f'  data      {splits.num_train} train'
        + (f' / {len(splits.val)} val' if hasattr(splits.val, '__len__') else '')
        + f' images in {splits.num_classes} classes ({splits.train_where}; val: {splits.val_where})'
        + ('; a resume restarts the stopped epoch at its start' if splits.streams else ''),
        f'  schedule  {cfg.epochs} epoch(s) x {parts.sampler.updates_per_epoch} updates'
        + (f' (the last cut to {cut})' if (cut := last_epoch_cut(cfg, parts.sampler.updates_per_epoch)) else '')
        + f', global batch '
        f'{cfg.global_batch_size}, lr {cfg.lr:.6g}, {cfg.sched}{parts.schedule.describe(cfg)}, {cfg.opt} wd '
        f'{cfg.weight_decay:g}',
        f'  train     random-resized crops {crops}, scale {tuple(cfg.scale)}, '
        f'hflip {cfg.hflip}' + (f', mixup {cfg.mixup} / cutmix {cfg.cutmix}' if cfg.mixup or cfg.cutmix else '')
        + (f', {cfg.aa}' if cfg.aa else ''),
        f'  eval      {size}, crop_pct {data["crop_pct"]:g} ({data["crop_mode"]}), {data["interpolation"]}, '
        f'mean {tuple(round(v, 4) for v in data["mean"])}, std {tuple(round(v, 4) for v in data["std"])}: '
        f'{eval_source}',
        f'  output    {run_dir}',
    ) + ((budget_line,) if budget_line else ())


def _readable_val(val_set, cfg: RunConfig, info: DistInfo) -> list[int]:
    """This process's val images less the unreadable ones, which are reported (and counted) before epoch 0,
    as validate.py does, instead of stopping the run after a whole epoch of training."""
    mine = val_indices(val_set, info.world_size, info.rank)
    bad = unreadable_images(val_set, mine, cfg.workers)
    total = int(all_reduce_sum([float(len(bad))], info)[0])
    if total and info.is_primary:
        shown = list(bad.values())[:SHOWN_UNREADABLE]
        for reason in shown:  # 'unreadable image PATH (cause); remove or replace it'
            print(f'train.py: skipped {reason} (val split: not counted in the accuracy)', file=sys.stderr, flush=True)
        if total > len(shown):
            print(f'train.py: skipped unreadable images: {total - len(shown)} more in the val split',
                  file=sys.stderr, flush=True)
    return [i for i in mine if i not in bad]


def set_up(args: argparse.Namespace, info: DistInfo, resumed: Resumed | None) -> Run:
    """Resolve the args, read the data, build the model and everything an epoch touches; writes nothing."""
    recipe_batch = load_recipe(args.recipe).get('batch_size') if args.recipe in BATCH_SENSITIVE_RECIPES else None
    args = resolve_args(args, info.world_size, recipe_batch if info.is_primary else None)
    if info.is_primary:  # before any data or weights load
        reason = unwritable_reason(args.output)
        if reason:
            raise TrainingInputError(f'--output {args.output}: cannot write there: {reason}; choose another --output')
        refuse_used_run_dir(_named_run_dir(args), args, resumed)
    splits = load_splits(args, info.rank, info.world_size)
    num_classes = splits.num_classes
    if not splits.streams:  # a batch too large for the data fails before any weights load
        sampler = train_sampler(splits.train, args, info.rank)
    seed_all(args.seed)  # the same initial weights on every process
    # the model's weights come through create_model; the rest of the training state is restored later
    model = build_model(args, num_classes, resumed.weights_path if resumed else None)
    # the run's data config: flags > the starting weight's eval settings > train.py's defaults
    start_cfg, eval_source = _starting_cfg(args, model, resumed)
    size_base, data_config = run_data_config(args, start_cfg, model.in_chans)
    train_size, data_config = sized_data_config(args, size_base, data_config)
    cfg = RunConfig.create(args, num_classes=num_classes, train_size=train_size, data_config=data_config.to_dict(),
                           size_base=size_base, epoch_sizes=_epoch_sizes(args, size_base, args.epochs))
    run_dir = _run_dir(cfg, train_size)
    if info.is_primary:
        refuse_used_run_dir(run_dir, cfg, resumed)
    model_cfg = run_pretrained_cfg(model, model.pretrained_cfg if start_cfg is not None else None, train_size,
                                   data_config)
    if isinstance(splits.val, SplitLocation):
        evaluation = eval_split_loader(splits, cfg, info)
    else:
        evaluation = val_loader(splits.val, cfg, _readable_val(splits.val, cfg, info))
    if splits.streams:
        loader, sampler = stream_loader(splits, cfg, info)
    else:
        loader = train_loader(splits.train, cfg, sampler)
    if cfg.sync_bn:
        model = convert_sync_bn(model, info.device, info.distributed)
    model = model.to(info.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    budget_line = None
    if cfg.time_budget is not None and resumed is None:  # a resume keeps the epochs its run was fitted to
        cfg, budget_line = _fit_to_budget(cfg, model, splits, sampler, evaluation, info)
    optimizer = create_optimizer(model, cfg)
    mixup = create_mixup(cfg)
    train_model = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == 'cuda'
                                          else None) if info.distributed else model
    if cfg.torchcompile:
        # as timm: the DDP-wrapped module is compiled (DDP's optimizer splits the graph at its buckets); the bare
        # ``model`` stays the source of the state dict (no ``_orig_mod.`` names), the EMA and validation
        train_model = torch.compile(train_model, backend=cfg.torchcompile, mode=cfg.torchcompile_mode)
    parts = TrainParts(
        cfg, info, model, train_model, optimizer, create_scheduler(optimizer, cfg, sampler.updates_per_epoch),
        lr_schedule(cfg, sampler.updates_per_epoch), create_loss(cfg, mixup), mixup, create_ema(model, cfg),
        loader, sampler, splits.train if splits.streams else loader.dataset,
        torch.amp.GradScaler(info.device.type) if cfg.amp and cfg.amp_dtype == 'float16'
        and info.device.type == 'cuda' else None)
    plan = _plan(cfg, model, splits, parts, eval_source, run_dir, resumed, budget_line)
    return Run(cfg, info, parts, evaluation, run_dir, model_cfg, splits.classes, plan, resumed)


def _epoch_sizes(args, size_base: tuple[int, int], epochs: int) -> tuple[int, ...]:
    """Each epoch's train size (``--train-sizes``; the train size throughout without it)."""
    try:
        return sizes.epoch_sizes(sizes.size_steps(args.train_sizes), size_base[0], epochs) \
            if args.train_sizes else (None,) * epochs
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise TrainingInputError(str(e)) from None


def _fit_to_budget(cfg: RunConfig, model, splits: Splits, sampler, evaluation, info: DistInfo
                   ) -> tuple[RunConfig, str]:
    """The run config with the epoch count that fits ``--time-budget`` (``regzoo.training.budget``), and the
    plan line saying what was measured. Every process measures; the times are averaged over processes so all
    fit the same count."""
    final = cfg.train_size[0]
    steps = sizes.size_steps(cfg.train_sizes) or ()
    schedule = sorted({step.size(cfg.size_base[0]) for step in steps} | {final})
    # the batches timed, plus what the workers prefetch: they keep loading while the timed ones train
    batches = (budget.MEASURED_UPDATES + 1) * cfg.grad_accum_steps + 2 * cfg.workers
    images = batches * cfg.batch_size
    if splits.streams:  # a stream cannot be sampled without starting an epoch: random images, compute only
        source = 'random images (compute only: shards are not sampled before the first epoch)'

        def batches_at(size):
            g = torch.Generator().manual_seed(cfg.seed)
            return [(torch.randn(cfg.batch_size, model.in_chans, size, size, generator=g),
                     torch.randint(0, cfg.num_classes, (cfg.batch_size,), generator=g))
                    for _ in range(images // cfg.batch_size)]
    else:
        source = f'{budget.MEASURED_UPDATES} updates on the train split per size'

        def batches_at(size):
            keys = [(i, mix_seed(cfg.seed, i)) for i in range(min(images, splits.num_train))]
            dataset = SeededTransformDataset(splits.train, train_transform(cfg, size))
            return torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=keys,
                                               num_workers=cfg.workers, drop_last=True)
    times = budget.measure_step_times(
        model, batches_at, schedule, accum=cfg.grad_accum_steps, device=info.device,
        memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format,
        autocast=lambda: autocast(cfg, info.device), eval_loader=evaluation,
        eval_batches=_val_batches(evaluation, splits, cfg, info), eval_passes=2 if cfg.model_ema else 1,
        source=source)
    if info.distributed:
        keys = sorted(times.per_update)
        mean = [v / info.world_size for v in all_reduce_sum(
            [times.per_update[k] for k in keys] + [times.epoch_overhead, times.spent], info)]
        times = budget.StepTimes(dict(zip(keys, mean[:-2])), mean[-2], mean[-1], times.source)

    def sizes_for(epochs: int) -> tuple[int, ...]:  # SIZE@EPOCH sizes a shorter run does not reach are left out
        return sizes.epoch_sizes(steps, cfg.size_base[0], epochs, strict=False) if steps else (final,) * epochs
    fit = budget.fit_run(cfg.time_budget * 60, sampler.updates_per_epoch, times, sizes_for)
    fitted = RunConfig.create(cfg.values, epochs=fit.epochs, last_epoch_updates=fit.last_epoch_updates,
                              epoch_sizes=_epoch_sizes(cfg, cfg.size_base, fit.epochs))
    return fitted, budget.describe(cfg.time_budget, fit, times)


def _val_batches(evaluation, splits: Splits, cfg: RunConfig, info: DistInfo) -> int:
    """This process's val batches per validation: its loader's length (a folder's readable images, its part of
    an HF split); a shard stream has none, so its images are counted as train shards' are and shared evenly
    over the processes (which read whole shards: a process may read a shard more than its even share)."""
    try:
        return len(getattr(evaluation, 'loader', evaluation))
    except TypeError:
        images = count_shard_samples(list(splits.val.shards))
        return -(-images // (info.world_size * (cfg.validation_batch_size or cfg.batch_size)))


def logger(info: DistInfo):
    """print, flushed, on the primary process; nothing on the others."""
    return functools.partial(print, flush=True) if info.is_primary else (lambda *a, **k: None)
