"""``--time-budget``: the epoch count fitted to a wall-clock budget from the measured speed of the first steps.

Before the first epoch a few updates are timed at every train size of the schedule (on a copy of the model, so
the run itself starts untouched), with the run's own data pipeline where it can be sampled (an image folder or
an HF split; shards are timed on random images: compute only), plus the per-epoch cost of starting the loader
and validating, the latter timed on the run's own val loader: its images' decoding is a validation's cost
too (timing the forward alone, on random tensors, left 1.8 s of each 3.8-s validation out of the
prediction). ``fit_run`` (pure) then picks the largest epoch count whose predicted time fits, to the update:
the last epoch is cut short where a whole one would overrun, so a short budget is not left a fifth unused
because its epochs are a fifth of it each.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

MEASURED_UPDATES = 5    # timed updates per train size, after one untimed (loader start, allocator warm-up)
MEASURED_EVAL_BATCHES = 3  # timed val batches (fetch and forward), after the first (loader start, warm-up)
MAX_EPOCHS = 10_000


@dataclass(frozen=True)
class StepTimes:
    """What the measurement found (seconds)."""
    per_update: Mapping[int, float]   # one update (all micro-batches) at each train size
    epoch_overhead: float             # per epoch: starting the train loader, validating
    spent: float                      # the measurement itself (taken from the budget)
    source: str                       # what was timed, for the plan line


def predicted_seconds(sizes: tuple[int, ...], updates_per_epoch: int, times: StepTimes) -> float:
    """The predicted time of epochs at ``sizes`` (one size per epoch)."""
    return sum(updates_per_epoch * times.per_update[s] + times.epoch_overhead for s in sizes)


@dataclass(frozen=True)
class Fit:
    """What fits a budget: ``epochs`` epochs, the last one cut to ``last_epoch_updates`` (None: whole)."""
    epochs: int
    last_epoch_updates: int | None
    predicted: float  # seconds, the measuring included


def fit_run(budget_seconds: float, updates_per_epoch: int, times: StepTimes,
            sizes_for: Callable[[int], tuple[int, ...]], max_epochs: int = MAX_EPOCHS) -> Fit:
    """The longest run whose predicted time fits in ``budget_seconds``: the most epochs of which the last can
    start (at least one update of it fits), that last epoch cut to the updates that fit; at least one update.
    ``sizes_for(epochs)`` gives each epoch's train size for a run of that length (a ramp stretches with it)."""
    available = budget_seconds - times.spent

    def before_last(epochs: int) -> float:  # the whole epochs before the last, and the last one's overhead
        return predicted_seconds(sizes_for(epochs)[:-1], updates_per_epoch, times) + times.epoch_overhead

    def last_update(epochs: int) -> float:
        return times.per_update[sizes_for(epochs)[-1]]

    epochs = 1
    while epochs < max_epochs and before_last(epochs + 1) + last_update(epochs + 1) <= available:
        epochs += 1
    updates = int((available - before_last(epochs)) // last_update(epochs))
    updates = min(max(updates, 1), updates_per_epoch)
    return Fit(epochs, updates if updates < updates_per_epoch else None,
               before_last(epochs) + updates * last_update(epochs) + times.spent)


def describe(budget_minutes: float, fit: Fit, times: StepTimes) -> str:
    """The plan's budget line."""
    steps = ', '.join(f'{size}px {seconds:.3g} s' for size, seconds in sorted(times.per_update.items()))
    last = f', the last cut to {fit.last_epoch_updates} update(s),' if fit.last_epoch_updates else ''
    over = (' (over the budget: less than the measuring and one update fits; give more minutes)'
            if fit.predicted > budget_minutes * 60 else '')
    return (f'  budget    {budget_minutes:g} min: {fit.epochs} epoch(s){last} fitted from {times.source} ({steps} '
            f'per update; {times.epoch_overhead:.3g} s per epoch to start the loader and validate; measuring took '
            f'{times.spent:.3g} s); predicted {fit.predicted / 60:.3g} min{over}')


def _timed_updates(batches: Iterable, step: Callable[[torch.Tensor, torch.Tensor], None], micro_batches: int,
                   sync: Callable[[], None]) -> tuple[float, float]:
    """(seconds to the first batch, seconds per micro-batch over ``micro_batches`` timed ones) of ``batches``.

    Each timed micro-batch counts its fetch too, and ``batches`` holds more than are timed, so the loader's
    workers are still loading (taking their share of the CPU, as in an epoch) while the last ones train: with
    the whole loader prefetched, only the compute would be timed (on two cores a third too fast).
    """
    start = time.perf_counter()
    iterator = iter(batches)
    batch = next(iterator, None)
    first = time.perf_counter() - start
    if batch is None:  # nothing to time: a DDP rank with no val images
        return first, 0.0
    t0 = time.perf_counter()
    step(*batch)  # untimed: the allocator and kernels warm up at this size
    sync()
    warm_up = time.perf_counter() - t0
    t0 = time.perf_counter()
    done = 0
    for x, y in iterator:
        step(x, y)
        done += 1
        if done == micro_batches:
            break
    sync()
    # one batch in all (a tiny split): its step, warm-up included, is the only estimate there is
    return first, ((time.perf_counter() - t0) / done if done else warm_up)


def measure_step_times(model: nn.Module, batches_at: Callable[[int], Iterable],
                       sizes: Iterable[int], *, accum: int, device: torch.device, memory_format,
                       autocast: Callable[[], object], eval_loader: Iterable, eval_batches: int, eval_passes: int,
                       source: str) -> StepTimes:
    """Time updates of a copy of ``model`` at each size (``batches_at(size)``: 1 + MEASURED_UPDATES x ``accum``
    micro-batches are used, more may be given), and a validation: ``eval_passes`` passes (2 with an EMA) over the
    ``eval_batches`` batches of ``eval_loader``, predicted from its first few."""
    began = time.perf_counter()
    trial = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(trial.parameters(), lr=1e-9, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    micro = {'n': 0}

    def step(x, y):
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with autocast():
            loss = loss_fn(trial(x), y.to(device))
        loss.backward()
        micro['n'] += 1
        if micro['n'] % accum == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    per_update, loader_start = {}, 0.0
    for size in sorted(set(sizes)):
        first, seconds = _timed_updates(batches_at(size), step, MEASURED_UPDATES * accum, sync)
        per_update[size] = seconds * accum
        loader_start = max(loader_start, first)
    trial.eval()
    with torch.inference_mode(), autocast():
        def forward(x, y):
            trial(x.to(device, non_blocking=True).contiguous(memory_format=memory_format))
        first, per_batch = _timed_updates(eval_loader, forward, MEASURED_EVAL_BATCHES, sync)
    # a validation: its loader's start, then every batch's fetch and forward at the timed rate; each epoch also
    # starts the train loader
    validation = first + eval_batches * per_batch
    return StepTimes(per_update, loader_start + eval_passes * validation, time.perf_counter() - began, source)
