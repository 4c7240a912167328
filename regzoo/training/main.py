"""train.py's body in steps: parse, set up (``setup.py``), restore a resumed state, write the run folder,
then per epoch train, validate and save."""
from __future__ import annotations

import csv
import errno
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml

from regzoo.training.args import parse_args
from regzoo.training.checkpoint import (
    read_resume_state,
    restore_rng_states,
    save_checkpoint,
    save_weights,
    write_run_config,
)
from regzoo.training.distributed import any_process, cleanup, init_distributed
from regzoo.training.components import last_epoch_cut
from regzoo.training.engine import EpochResult, TrainParts, train_one_epoch, validate_epoch
from regzoo.training.errors import TrainingInputError
from regzoo.training.setup import Resumed, Run, logger, set_up, warn
from regzoo.utils.files import atomic_write
from regzoo.utils.runtime import clock_text, one_line
from regzoo.zoo.layout import (
    CONFIG_NAME,
    RUN_ARGS_FILE,
    RUN_BEST_FILE,
    RUN_EMA_FILE,
    RUN_LAST,
    RUN_STATE_SUFFIX,
    RUN_SUMMARY_FILE,
    WEIGHTS_SUFFIX,
)

SUMMARY_FIELDS = ('epoch', 'train_loss', 'val_loss', 'top1', 'top5', 'lr', 'images_per_sec')


@dataclass(frozen=True)
class Position:
    """Where the loop stands: the next epoch and update, the loss and images of a part-done epoch, the best."""
    epoch: int = 0
    step_in_epoch: int = 0
    update: int = 0
    loss_sum: float = 0.0
    images: int = 0
    best: tuple[float, int] = (-1.0, -1)   # (top-1, epoch)


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


def _training_state(parts: TrainParts, position: Position) -> dict:
    return {'epoch': position.epoch, 'step_in_epoch': position.step_in_epoch, 'update': position.update,
            'epoch_loss_sum': position.loss_sum, 'epoch_images': position.images, 'best_top1': position.best[0],
            'best_epoch': position.best[1], 'optimizer': parts.optimizer.state_dict(),
            'scheduler': parts.scheduler.state_dict(),
            'ema': parts.ema.module.state_dict() if parts.ema is not None else None,
            'scaler': parts.scaler.state_dict() if parts.scaler else None,
            'args': parts.cfg.to_dict()}


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
        weights_path, _, state = read_resume_state(args.resume, warn=warn)
        resumed = Resumed(weights_path, state)
        args = parse_args(argv, state['args'])
    info = init_distributed(args.device)
    try:
        with stop_on_signals() as stop_requested:
            run = set_up(args, info, resumed)
            position = restore(run.parts, resumed)
            code = _train(run, position, stop_requested)
        if info.distributed:
            # every process past its last collective before any tears gloo down: a process that destroyed its
            # group while the other still finished its work was once aborted at exit under load (SIGABRT,
            # "terminate called without an active exception"). Only on a normal return: after an error the
            # others may never get here
            torch.distributed.barrier()
        return code
    finally:
        cleanup(info)


def restore(parts: TrainParts, resumed: Resumed | None) -> Position:
    """The restore step: a resumed run's optimizer, schedule, EMA, scaler and RNG states, and where it stood."""
    if resumed is None:
        return Position()
    state = resumed.state
    parts.optimizer.load_state_dict(state['optimizer'])
    parts.scheduler.load_state_dict(state['scheduler'])
    if parts.ema is not None and state['ema'] is not None:
        parts.ema.module.load_state_dict(state['ema'])
    if parts.scaler and state['scaler']:
        parts.scaler.load_state_dict(state['scaler'])
    restore_rng_states(state['rng'])
    best = (state['best_top1'], state['best_epoch'])
    if parts.sampler.restarts_epochs and state['step_in_epoch']:
        # a stream has no saved position inside an epoch: the stopped epoch runs again from its start, with the
        # weights as saved (an epoch-boundary resume; the per-update schedule goes back to the epoch's start too)
        if parts.info.is_primary:
            print(f'train.py: shards resume at an epoch boundary: epoch {state["epoch"]} restarts at its start '
                  f'(its {state["step_in_epoch"]} update(s) before the stop are trained again)', flush=True)
        return Position(state['epoch'], 0, state['update'] - state['step_in_epoch'], 0.0, 0, best)
    primary = parts.info.is_primary  # the part-done epoch's loss is summed over processes, kept by process 0
    return Position(state['epoch'], state['step_in_epoch'], state['update'],
                    state['epoch_loss_sum'] if primary else 0.0, state['epoch_images'] if primary else 0, best)


def _run_files(run_dir: Path) -> list[Path]:
    """The files a run writes in its folder (what --overwrite replaces)."""
    return [p for p in run_dir.iterdir() if p.is_file() and (p.name in (RUN_ARGS_FILE, RUN_SUMMARY_FILE, CONFIG_NAME)
                                                          or p.name.endswith((WEIGHTS_SUFFIX, RUN_STATE_SUFFIX)))]


def write_run_files(run: Run) -> bool:
    """The run folder's args and config.json, once the start succeeded (before any weights: every weights file
    of the run points to the config); with --overwrite, an earlier run's files go first. Returns whether the
    folder was made now."""
    made = not run.run_dir.exists()
    with _saving(run.run_dir):
        run.run_dir.mkdir(parents=True, exist_ok=True)
        if run.cfg.overwrite and run.resumed is None:
            for p in _run_files(run.run_dir):
                p.unlink()
        atomic_write(run.run_dir / RUN_ARGS_FILE,
                     lambda tmp: tmp.write_text(yaml.safe_dump(run.cfg.to_dict(), sort_keys=True)))
        write_run_config(run.run_dir, run.parts.model, run.model_cfg, list(run.class_names) if run.class_names is not None else None)
    return made


def _remove_failed_start(run: Run, made: bool) -> None:
    """A run that failed before its first save leaves no folder behind (or, in a folder it did not make, none of
    its files)."""
    if run.resumed is not None or any(run.run_dir.glob(f'*{RUN_STATE_SUFFIX}')):
        return
    if made:
        shutil.rmtree(run.run_dir, ignore_errors=True)
    else:
        for p in _run_files(run.run_dir):
            p.unlink(missing_ok=True)


def _train(run: Run, position: Position, stop_requested) -> int:
    """Write the run folder, then run the epochs; a failure before the first save removes what it wrote."""
    info = run.info
    log = logger(info)
    made = write_run_files(run) if info.is_primary else False
    try:
        return _epochs(run, position, stop_requested, log)
    except BaseException:
        if info.is_primary:
            _remove_failed_start(run, made)
        raise


def _epochs(run: Run, position: Position, stop_requested, log) -> int:
    """The epoch steps: train, validate, save, until the last epoch or a stop signal."""
    cfg, info, parts = run.cfg, run.info, run.parts
    for line in run.plan:
        log(line)
    log(f'{cfg.model}: {info.world_size} process(es) x batch {cfg.batch_size} x {cfg.grad_accum_steps} '
        f'accumulation = global batch {cfg.global_batch_size}; lr {cfg.lr:.6g} ({cfg.lr_source}); '
        f'{parts.sampler.updates_per_epoch} updates/epoch; writing {run.run_dir}'
        + (f'; resuming at epoch {position.epoch} update {position.step_in_epoch}' if run.resumed else ''))
    run_watch, first_epoch = time.monotonic(), position.epoch
    for epoch in range(position.epoch, cfg.epochs):
        result: EpochResult = train_one_epoch(
            parts, epoch=epoch, start_update=position.step_in_epoch, global_update=position.update,
            loss_sum=position.loss_sum, images=position.images, stop_requested=stop_requested, log=log)
        if result.stopped:
            if info.is_primary:
                with _saving(run.run_dir / RUN_LAST):
                    stopped_at = replace(position, epoch=epoch, step_in_epoch=result.updates_done,
                                         update=result.global_update, loss_sum=result.loss_sum, images=result.images)
                    path = save_checkpoint(run.run_dir, RUN_LAST, parts.model.state_dict(),
                                           _training_state(parts, stopped_at))
                log(f'stop signal: saved {path} at epoch {epoch} update {result.updates_done}; '
                    f'continue with --resume {path}')
            return 128 + int(stop_requested() or signal.SIGTERM)
        position = _end_epoch(run, epoch, result, position, log, (run_watch, first_epoch))
        if stop_requested():
            log(f'stop signal: saved {run.run_dir / (RUN_LAST + RUN_STATE_SUFFIX)} after epoch {epoch}')
            return 128 + int(stop_requested() or signal.SIGTERM)
    log(f'best top-1 {position.best[0]:.2f} at epoch {position.best[1]}')
    if cfg.time_budget is not None:
        last = last_epoch_cut(cfg, parts.sampler.updates_per_epoch)
        cut = f', the last cut to {last} update(s),' if last else ''
        log(f'trained {cfg.epochs - first_epoch} epoch(s){cut} in {clock_text(time.monotonic() - run_watch)} of '
            f'the {cfg.time_budget:g}-min budget' + (' (this resumed part)' if run.resumed else ''))
    return 0


def _end_epoch(run: Run, epoch: int, result: EpochResult, position: Position, log,
               watch: tuple[float, int]) -> Position:
    """Validate, step the per-epoch schedule, record and save; returns the position after the epoch."""
    cfg, info, parts = run.cfg, run.info, run.parts
    metrics = validate_epoch(parts.model, run.evaluation, cfg, info)
    eval_model, key = parts.model, 'top1'
    if parts.ema is not None:
        ema_metrics = validate_epoch(parts.ema.module, run.evaluation, cfg, info)
        metrics.update({f'ema_{k}': v for k, v in ema_metrics.items()})
        eval_model, key = parts.ema.module, 'ema_top1'  # as timm: the EMA decides "best"
    parts.scheduler.step(epoch + 1, metrics[key])  # a per-update schedule ignores it
    is_best = metrics[key] > position.best[0]
    after = Position(epoch + 1, 0, result.global_update, 0.0, 0,
                     (metrics[key], epoch) if is_best else position.best)
    failure = None
    if info.is_primary:
        try:
            _save_epoch(run, epoch, result, metrics, after, eval_model if is_best else None, log, watch)
        except TrainingInputError as e:
            failure = e
    # all processes stop when the primary could not save: the others would otherwise wait for it in the
    # next epoch's first collective until the process group times out (30 minutes)
    if any_process(failure is not None, info):
        raise failure or TrainingInputError('stopping: process 0 could not save its checkpoint (its error '
                                            'says why)')
    return after


def _save_epoch(run: Run, epoch: int, result: EpochResult, metrics: dict, after: Position,
                best_model, log, watch: tuple[float, int]) -> None:
    """The save step (process 0): the summary row, the epoch line, the last pair, the EMA and best weights."""
    cfg, parts, run_dir = run.cfg, run.parts, run.run_dir
    row = {'epoch': epoch, 'train_loss': result.loss_sum / max(result.images, 1), 'val_loss': metrics['loss'],
           'top1': metrics['top1'], 'top5': metrics['top5'], 'lr': result.lr,
           'images_per_sec': result.images / max(result.seconds, 1e-9),
           **{k: v for k, v in metrics.items() if k.startswith('ema_')}}
    with _saving(run_dir / RUN_SUMMARY_FILE):
        _record_summary(run_dir / RUN_SUMMARY_FILE, row)
    elapsed = time.monotonic() - watch[0]
    left = elapsed / (epoch - watch[1] + 1) * (cfg.epochs - epoch - 1)
    log('epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, top-1 {top1:.2f}, '
        'top-5 {top5:.2f}, lr {lr:.6g}, {images_per_sec:.1f} img/s'.format(**row)
        + (f', EMA top-1 {metrics["ema_top1"]:.2f}' if parts.ema is not None else '')
        + f'; {epoch + 1}/{cfg.epochs} epochs, elapsed {clock_text(elapsed)}, run ETA {clock_text(left)}')
    with _saving(run_dir / RUN_LAST):
        save_checkpoint(run_dir, RUN_LAST, parts.model.state_dict(), _training_state(parts, after))
    if parts.ema is not None:
        with _saving(run_dir / RUN_EMA_FILE):
            save_weights(run_dir / RUN_EMA_FILE, parts.ema.module.state_dict(), {'epoch': str(epoch)})
    if best_model is not None:
        with _saving(run_dir / RUN_BEST_FILE):
            save_weights(run_dir / RUN_BEST_FILE, best_model.state_dict(),
                         {'epoch': str(epoch), 'top1': f'{after.best[0]:.4f}'})


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
