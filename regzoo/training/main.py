"""train.py's body: parse, set up, loop over epochs, checkpoint, report."""
from __future__ import annotations

import argparse
import csv
import errno
import functools
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from regzoo.training.args import BATCH_SENSITIVE_RECIPES, args_to_dict, load_recipe, parse_args, resolve_args
from regzoo.training.checkpoint import (
    read_resume_state,
    restore_rng_states,
    run_pretrained_cfg,
    save_checkpoint,
    save_weights,
    write_run_config,
)
from regzoo.training.components import (
    build_model,
    convert_sync_bn,
    create_ema,
    create_loss,
    create_mixup,
    create_optimizer,
    create_scheduler,
)
from regzoo.training.distributed import DistInfo, any_process, cleanup, init_distributed
from regzoo.training.engine import EpochResult, TrainParts, train_one_epoch, validate_epoch
from regzoo.training.errors import TrainingInputError
from regzoo.training.loaders import (
    load_splits,
    run_data_config,
    seed_all,
    train_loader,
    train_sampler,
    val_loader,
)
from regzoo.utils.files import atomic_write, unwritable_reason
from regzoo.utils.runtime import one_line
from regzoo.zoo.layout import RUN_BEST_FILE, RUN_EMA_FILE, RUN_LAST, RUN_STATE_SUFFIX

SUMMARY_FIELDS = ('epoch', 'train_loss', 'val_loss', 'top1', 'top5', 'lr', 'images_per_sec')


@contextmanager
def stop_on_signals():
    """Yield a callable giving the SIGTERM/SIGINT number once one arrived (else 0); the loop then saves and exits."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: received[0] if received else 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run_dir(args: argparse.Namespace) -> Path:
    if args.resume and 'experiment' not in args.cli_keys and 'output' not in args.cli_keys:
        p = Path(args.resume)
        return p if p.is_dir() else p.parent  # continue in the resumed run's folder
    name = args.experiment or f'{time.strftime("%Y%m%d-%H%M%S")}-{args.model}-{args.train_size[0]}'
    return Path(args.output) / name


def _starting_cfg(args: argparse.Namespace, model, resumed) -> tuple[object, str]:
    """The eval settings the run's own default to, and where they come from (for the plan).

    A resumed run keeps the ones it resolved when it started (its saved args); a run from a weight takes that
    weight's (``model.pretrained_cfg``: the published cfg, or the config.json saved with a checkpoint);
    otherwise there are none, and train.py's defaults apply.
    """
    if resumed:
        saved = resumed[1]['args']
        if saved.get('data_config') and saved.get('train_size'):
            data = saved['data_config']
            return {**data, 'input_size': (data['input_size'][0], *saved['train_size']),
                    'test_input_size': data['input_size']}, 'the resumed run'
        return None, "train.py's defaults"
    if args.pretrained or args.initial_checkpoint:
        cfg = getattr(model, 'pretrained_cfg', None)
        what = f'--initial-checkpoint {args.initial_checkpoint}' if args.initial_checkpoint else '--pretrained'
        if cfg is not None:
            return cfg, f'the starting weight\'s ({what})'
        return None, f'train.py\'s defaults ({what} carries no eval settings)'
    return None, "train.py's defaults"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def _plan(args: argparse.Namespace, model, train_set, val_set, updates_per_epoch: int, eval_source: str,
          run_dir: Path, resumed) -> list[str]:
    """What the run is about to do, printed before it starts."""
    data = args.data_config
    if resumed:
        start = f'resuming {args.resume}'
    elif args.initial_checkpoint:
        start = f'from --initial-checkpoint {args.initial_checkpoint}'
    elif args.pretrained:
        start = f'from the pretrained weight {model.pretrained_cfg.name}'
    else:
        start = 'from random init'
    size = 'x'.join(map(str, data['input_size'][1:]))
    warmup = f', warmup {args.warmup_epochs} epoch(s) from lr {args.warmup_lr:.3g}' if args.warmup_epochs else ''
    return [
        f'plan ({"recipe " + args.recipe if args.recipe else "no recipe"}):',
        f'  model     {args.model}, {model.num_classes} classes, {start}',
        f'  data      {len(train_set)} train / {len(val_set)} val images in {len(train_set.classes)} classes '
        f'({Path(args.data_dir) / args.train_split}, {Path(args.data_dir) / args.val_split})',
        f'  schedule  {args.epochs} epoch(s) x {updates_per_epoch} updates, global batch {args.global_batch_size}, '
        f'lr {args.lr:.6g}, {args.sched}{warmup}, {args.opt} wd {args.weight_decay:g}',
        f'  train     random-resized crops {"x".join(map(str, args.train_size))}, scale {tuple(args.scale)}, '
        f'hflip {args.hflip}' + (f', mixup {args.mixup} / cutmix {args.cutmix}' if args.mixup or args.cutmix else '')
        + (f', {args.aa}' if args.aa else ''),
        f'  eval      {size}, crop_pct {data["crop_pct"]:g} ({data["crop_mode"]}), {data["interpolation"]}, '
        f'mean {tuple(round(v, 4) for v in data["mean"])}, std {tuple(round(v, 4) for v in data["std"])}: '
        f'{eval_source}',
        f'  output    {run_dir}',
    ]


def _training_state(parts: TrainParts, epoch: int, step_in_epoch: int, update: int, loss_sum: float,
                    images: int, best: tuple[float, int]) -> dict:
    return {'epoch': epoch, 'step_in_epoch': step_in_epoch, 'update': update,
            'epoch_loss_sum': loss_sum, 'epoch_images': images, 'best_top1': best[0], 'best_epoch': best[1],
            'optimizer': parts.optimizer.state_dict(), 'scheduler': parts.scheduler.state_dict(),
            'ema': parts.ema.module.state_dict() if parts.ema is not None else None,
            'scaler': parts.scaler.state_dict() if parts.scaler else None,
            'args': args_to_dict(parts.args)}


def _warn(message: str) -> None:
    print(f'train.py: warning: {message}', file=sys.stderr, flush=True)


@contextmanager
def _saving(what: Path):
    """A failed write (a full disk, a read-only or missing folder) stops the run with one line; the files
    written before it stay as they were (``atomic_write``, ``save_checkpoint``)."""
    try:
        yield
    except OSError as e:
        reason = e.strerror or one_line(e)
        fix = 'free space or choose another --output' if e.errno in (errno.ENOSPC, errno.EDQUOT) \
            else 'choose another --output'
        raise TrainingInputError(f'could not save {what}: {reason}; {fix}') from None


def main(argv: list[str] | None = None) -> int:
    """Train; returns the exit code: 0, or 128 + the signal number after a signal-triggered save."""
    args = parse_args(argv)
    resumed = None
    if args.resume:
        weights_path, _, state = read_resume_state(args.resume, warn=_warn)
        resumed = (weights_path, state)
        args = parse_args(argv, state['args'])
    info = init_distributed(args.device)
    try:
        with stop_on_signals() as stop_requested:
            code = _train(args, info, resumed, stop_requested)
        if info.distributed:
            # every process past its last collective before any tears gloo down: a process that destroyed its
            # group while the other still finished its work was once aborted at exit under load (SIGABRT,
            # "terminate called without an active exception"). Only on a normal return: after an error the
            # others may never get here
            torch.distributed.barrier()
        return code
    finally:
        cleanup(info)


def _train(args, info: DistInfo, resumed, stop_requested) -> int:
    recipe_batch = load_recipe(args.recipe).get('batch_size') if args.recipe in BATCH_SENSITIVE_RECIPES else None
    args = resolve_args(args, info.world_size, recipe_batch if info.is_primary else None)
    reason = unwritable_reason(args.output) if info.is_primary else None
    if reason:  # before any data or weights load
        raise TrainingInputError(f'--output {args.output}: cannot write there: {reason}; choose another --output')
    log = functools.partial(print, flush=True) if info.is_primary else (lambda *a, **k: None)
    train_set, val_set, args.num_classes = load_splits(args)
    sampler = train_sampler(train_set, args, info.rank)  # a batch too large for the data fails before any weights load
    seed_all(args.seed)  # the same initial weights on every process
    # the model's weights come through create_model; the rest of the training state is restored below
    model = build_model(args, resumed[0] if resumed else None)
    # the run's data config: flags > the starting weight's eval settings > train.py's defaults
    start_cfg, eval_source = _starting_cfg(args, model, resumed)
    train_size, data_config = run_data_config(args, start_cfg, model.in_chans)
    args.train_size, args.data_config = list(train_size), args_to_dict(argparse.Namespace(**data_config.to_dict()))
    run_cfg = run_pretrained_cfg(model, model.pretrained_cfg if start_cfg is not None else None, train_size,
                                 data_config)
    loader = train_loader(train_set, args, sampler)
    if args.sync_bn:
        model = convert_sync_bn(model, info.device, info.distributed)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(info.device, memory_format=memory_format)
    optimizer = create_optimizer(model, args)
    scheduler = create_scheduler(optimizer, args, sampler.updates_per_epoch)
    mixup = create_mixup(args)
    ema = create_ema(model, args)
    scaler = torch.amp.GradScaler(info.device.type) if args.amp and args.amp_dtype == 'float16' \
        and info.device.type == 'cuda' else None
    epoch, step_in_epoch, update, loss_sum, images, best = 0, 0, 0, 0.0, 0, (-1.0, -1)
    if resumed:
        _, state = resumed
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        if ema is not None and state['ema'] is not None:
            ema.module.load_state_dict(state['ema'])
        if scaler and state['scaler']:
            scaler.load_state_dict(state['scaler'])
        restore_rng_states(state['rng'])
        epoch, step_in_epoch, update = state['epoch'], state['step_in_epoch'], state['update']
        loss_sum, images = (state['epoch_loss_sum'], state['epoch_images']) if info.is_primary else (0.0, 0)
        best = (state['best_top1'], state['best_epoch'])
    train_model = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == 'cuda'
                                          else None) if info.distributed else model
    parts = TrainParts(args, info, model, train_model, optimizer, scheduler, create_loss(args, mixup), mixup, ema,
                       loader, sampler, scaler)
    evaluation = val_loader(val_set, args, info.rank)

    run_dir = _run_dir(args)
    if info.is_primary:
        with _saving(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(run_dir / 'args.yaml', lambda tmp: tmp.write_text(yaml.safe_dump(args_to_dict(args),
                                                                                           sort_keys=True)))
            # before any weights: every weights file of the run points to it
            write_run_config(run_dir, model, run_cfg, list(train_set.classes))
    for line in _plan(args, model, train_set, val_set, sampler.updates_per_epoch, eval_source, run_dir, resumed):
        log(line)
    log(f'{args.model}: {info.world_size} process(es) x batch {args.batch_size} x {args.grad_accum_steps} '
        f'accumulation = global batch {args.global_batch_size}; lr {args.lr:.6g} ({args.lr_source}); '
        f'{sampler.updates_per_epoch} updates/epoch; writing {run_dir}'
        + (f'; resuming at epoch {epoch} update {step_in_epoch}' if resumed else ''))

    run_watch, first_epoch = time.monotonic(), epoch
    for epoch in range(epoch, args.epochs):
        result: EpochResult = train_one_epoch(parts, epoch, step_in_epoch, update, loss_sum, images,
                                              stop_requested, log)
        update, step_in_epoch = result.global_update, 0
        if result.stopped:
            if info.is_primary:
                with _saving(run_dir / RUN_LAST):
                    path = save_checkpoint(run_dir, RUN_LAST, model.state_dict(), _training_state(
                        parts, epoch, result.updates_done, update, result.loss_sum, result.images, best))
                log(f'stop signal: saved {path} at epoch {epoch} update {result.updates_done}; '
                    f'continue with --resume {path}')
            return 128 + int(stop_requested() or signal.SIGTERM)
        metrics = validate_epoch(model, evaluation, args, info)
        eval_model, key = model, 'top1'
        if ema is not None:
            ema_metrics = validate_epoch(ema.module, evaluation, args, info)
            metrics.update({f'ema_{k}': v for k, v in ema_metrics.items()})
            eval_model, key = ema.module, 'ema_top1'  # as timm: the EMA decides "best"
        lr = optimizer.param_groups[0]['lr']
        scheduler.step(epoch + 1, metrics[key])
        train_loss = result.loss_sum / max(result.images, 1)
        loss_sum, images = 0.0, 0
        is_best = metrics[key] > best[0]
        best = (metrics[key], epoch) if is_best else best
        failure = None
        if info.is_primary:
            try:
                row = {'epoch': epoch, 'train_loss': train_loss, 'val_loss': metrics['loss'], 'top1': metrics['top1'],
                       'top5': metrics['top5'], 'lr': lr, 'images_per_sec': result.images / max(result.seconds, 1e-9),
                       **{k: v for k, v in metrics.items() if k.startswith('ema_')}}
                with _saving(run_dir / 'summary.csv'):
                    _record_summary(run_dir / 'summary.csv', row)
                elapsed = time.monotonic() - run_watch
                left = elapsed / (epoch - first_epoch + 1) * (args.epochs - epoch - 1)
                log('epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, top-1 {top1:.2f}, '
                    'top-5 {top5:.2f}, lr {lr:.6g}, {images_per_sec:.1f} img/s'.format(**row)
                    + (f', EMA top-1 {metrics["ema_top1"]:.2f}' if ema is not None else '')
                    + f'; {epoch + 1}/{args.epochs} epochs, elapsed {_clock(elapsed)}, run ETA {_clock(left)}')
                with _saving(run_dir / RUN_LAST):
                    save_checkpoint(run_dir, RUN_LAST, model.state_dict(),
                                    _training_state(parts, epoch + 1, 0, update, 0.0, 0, best))
                if ema is not None:
                    with _saving(run_dir / RUN_EMA_FILE):
                        save_weights(run_dir / RUN_EMA_FILE, ema.module.state_dict(), {'epoch': str(epoch)})
                if is_best:
                    with _saving(run_dir / RUN_BEST_FILE):
                        save_weights(run_dir / RUN_BEST_FILE, eval_model.state_dict(),
                                     {'epoch': str(epoch), 'top1': f'{metrics[key]:.4f}'})
            except TrainingInputError as e:
                failure = e
        # all processes stop when the primary could not save: the others would otherwise wait for it in the
        # next epoch's first collective until the process group times out (30 minutes)
        if any_process(failure is not None, info):
            raise failure or TrainingInputError('stopping: process 0 could not save its checkpoint (its error '
                                                'says why)')
        if stop_requested():
            log(f'stop signal: saved {run_dir / (RUN_LAST + RUN_STATE_SUFFIX)} after epoch {epoch}')
            return 128 + int(stop_requested() or signal.SIGTERM)
    log(f'best top-1 {best[0]:.2f} at epoch {best[1]}')
    return 0


def _record_summary(path: Path, row: dict) -> None:
    """One row per epoch: an epoch run again (a resume from an older pair after a failed save) replaces its row
    and the rows after it. The file is rewritten whole (``atomic_write``), so a failed write leaves the old one."""
    rows = []
    if path.is_file():
        with path.open(newline='') as f:
            rows = [r for r in csv.DictReader(f) if r.get('epoch', '').isdigit() and int(r['epoch']) < row['epoch']]
    rows.append(row)
    fields = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: Path) -> None:
        with tmp.open('w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)
