"""Progressive resizing: the train crop size of every epoch, from ``--train-sizes`` (pure functions).

Low resolution early and the target resolution at the end (FFCV's ResNet recipes; "train low, test high" in
FixRes): early epochs cost a fraction of a full-size epoch, so a budget buys more epochs. The batch and the lr
stay what they are at every size, so the updates per epoch, the lr schedule and an exact resume do not depend
on the size; each epoch's size is a function of the epoch number alone, the same on every process.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

SIZE_MULTIPLE = 4   # fractional sizes round to a multiple of this (a stride-32 net pools any size)
MIN_SIZE = 16


@dataclass(frozen=True)
class SizeStep:
    """One ``--train-sizes`` entry: pixels or a fraction of the final train size, and an optional start epoch."""
    pixels: int | None = None
    fraction: float | None = None
    start_epoch: int | None = None

    def size(self, base: int) -> int:
        if self.pixels is not None:
            return self.pixels
        return max(MIN_SIZE, round(self.fraction * base / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    def __str__(self) -> str:
        text = str(self.pixels) if self.pixels is not None else f'{self.fraction:g}'
        return text if self.start_epoch is None else f'{text}@{self.start_epoch}'


def parse_size(value: str | int | float, what: str = 'size') -> SizeStep:
    """64 / '64' (pixels) or 0.75 / '0.75' (a fraction of the train size, 0 < f <= 2: a float, or text with a
    '.'); no start epoch."""
    text = str(value)
    try:
        if isinstance(value, float) or '.' in text:
            fraction = float(text)
            if not 0 < fraction <= 2:
                raise ValueError
            return SizeStep(fraction=fraction)
        pixels = int(text)
        if pixels < MIN_SIZE:
            raise ValueError
        return SizeStep(pixels=pixels)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{what} {text!r}: expected pixels (an integer >= {MIN_SIZE}) or a fraction of the train size '
            '(e.g. 0.75)') from None


def parse_size_step(value: str | int | float) -> SizeStep:
    """'SIZE' or 'SIZE@EPOCH' (``--train-sizes`` entries; YAML numbers too)."""
    size, sep, epoch = str(value).partition('@')
    step = parse_size(value if not sep else size, 'train size')
    if not sep:
        return step
    if not epoch.isdigit():
        raise argparse.ArgumentTypeError(f'train size {value!r}: expected SIZE@EPOCH with EPOCH an integer >= 0')
    return SizeStep(step.pixels, step.fraction, int(epoch))


def size_step_arg(text: str) -> str:
    """argparse type of a ``--train-sizes`` entry: checked, kept as typed (args.yaml and resume states hold
    plain values)."""
    parse_size_step(text)
    return text


def size_arg(text: str) -> int | float:
    """argparse type of ``--test-img-size``: pixels as an int, a fraction as a float."""
    step = parse_size(text, 'test size')
    return step.pixels if step.pixels is not None else step.fraction


def size_steps(values) -> tuple[SizeStep, ...] | None:
    """The run's ``train_sizes`` setting (None, or entries as typed or as YAML numbers) as SizeSteps."""
    return None if values is None else tuple(parse_size_step(v) for v in values)


def check_steps(steps: tuple[SizeStep, ...]) -> None:
    """Raise ValueError for a schedule that is not one of the two forms (all start epochs given, from 0 and
    rising; or none, spreading the sizes evenly)."""
    starts = [s.start_epoch for s in steps]
    if not steps:
        raise ValueError('--train-sizes needs at least one size')
    if any(s is None for s in starts) and any(s is not None for s in starts):
        raise ValueError('--train-sizes: give a start epoch to every size (SIZE@EPOCH) or to none')
    if starts[0] is not None and (starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:]))):
        raise ValueError(f'--train-sizes: start epochs must begin at 0 and rise, got {", ".join(map(str, steps))}')


def epoch_sizes(steps: tuple[SizeStep, ...] | None, base: int, epochs: int, strict: bool = True) -> tuple[int, ...]:
    """The train size of each of ``epochs`` epochs; ``base`` is the final train size fractions refer to.

    No steps: ``base`` throughout. Steps without start epochs split the epochs into equal consecutive parts
    (size i from epoch floor(i * epochs / n)), so the ramp stretches with the budget; with start epochs
    (``SIZE@EPOCH``) each size runs from its epoch to the next one's; one starting at or after the last epoch
    raises ValueError (``strict``) or is left out.
    """
    if not steps:
        return (base,) * epochs
    check_steps(steps)
    if steps[0].start_epoch is None:
        starts = [i * epochs // len(steps) for i in range(len(steps))]
    else:
        starts = [s.start_epoch for s in steps]
        late = [str(s) for s in steps if s.start_epoch >= epochs]
        if late and strict:
            raise ValueError(f'--train-sizes {" ".join(late)} start(s) at or after the last epoch (the run has '
                             f'{epochs} epochs; sizes without @EPOCH stretch to any length)')
    sizes = []
    for epoch in range(epochs):
        step = max(i for i, start in enumerate(starts) if start <= epoch)
        sizes.append(steps[step].size(base))
    return tuple(sizes)


def describe(sizes: tuple[int, ...]) -> str:
    """'48 (epochs 0-3), 56 (4-7), 64 (8-11)' for the plan."""
    parts, start = [], 0
    for i in range(1, len(sizes) + 1):
        if i == len(sizes) or sizes[i] != sizes[start]:
            span = f'{start}' if i - 1 == start else f'{start}-{i - 1}'
            parts.append(f'{sizes[start]} (epoch{"s" if i - 1 > start else ""} {span})')
            start = i
    return ', '.join(parts)
