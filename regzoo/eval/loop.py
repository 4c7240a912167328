"""The one top-k evaluation loop: validate.py's per-weight evaluation and training's per-epoch validation.

It returns sums, not percentages, so that callers can add them up: training sums them over DDP
processes before dividing, validate.py divides by the number of readable images.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

Prediction = tuple[int, tuple[int, ...]]  # (target, top-k predicted class indices, best first)


@dataclass(frozen=True)
class TopkCounts:
    """Sums over the images seen: top-1 / top-5 hits and the summed loss (0.0 without a criterion)."""
    num_images: int
    correct1: int
    correct5: int
    loss_sum: float
    predictions: tuple[Prediction, ...] = ()  # per image in loader order, when asked for


def count_topk(
        model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str, *,
        amp_dtype: torch.dtype | None = None, memory_format: torch.memory_format = torch.contiguous_format,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        keep_predictions: bool = False, on_batch: Callable[[int, int, int], object] | None = None,
) -> TopkCounts:
    """Top-1 / top-5 hits of ``model`` over ``(images, targets)`` batches (top-k is capped at the class count).

    ``criterion`` must sum over the batch (``reduction='sum'``); it and top-k see float32 logits, whatever
    ``amp_dtype`` the forward ran in. ``on_batch(images, correct1, correct5)`` gets the running sums
    after each batch (progress bars, logs). The model's train/eval mode is the caller's business.
    """
    device = torch.device(device)
    n = correct1 = correct5 = 0
    loss_sum = 0.0
    predictions: list[Prediction] = []
    with torch.inference_mode():
        for images, targets in batches:
            images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                logits = model(images)
            logits = logits.float()
            if criterion is not None:
                loss_sum += criterion(logits, targets).item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top.eq(targets[:, None])
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
            n += len(targets)
            if keep_predictions:
                predictions.extend(zip(targets.tolist(), map(tuple, top.tolist())))
            if on_batch is not None:
                on_batch(n, correct1, correct5)
    return TopkCounts(n, correct1, correct5, loss_sum, tuple(predictions))


# top-1 agreement: how often two models (a faster or quantized one and its fp32 original) pick the same class.
# A fraction everywhere; callers that print or store percentages convert.

def top1_matches(logits: torch.Tensor, reference_logits: torch.Tensor) -> int:
    """How many rows of two logit batches (same images) have the same top-1 class."""
    return int((logits.argmax(-1) == reference_logits.argmax(-1)).sum())


def top1_agreement(model: Callable[[torch.Tensor], torch.Tensor], reference: Callable[[torch.Tensor], torch.Tensor],
                   images: torch.Tensor, batch_size: int) -> float:
    """Fraction of ``images`` on which ``model`` and ``reference`` predict the same top-1 class."""
    with torch.no_grad():
        same = sum(top1_matches(model(x), reference(x)) for x in images.split(batch_size))
    return same / len(images)


def predictions_top1_agreement(predictions: Iterable[Prediction], reference: Iterable[Prediction]) -> float:
    """``top1_agreement`` of two runs over the same images, from their kept ``(target, top-k)`` predictions
    (0.0 for no images)."""
    pairs = list(zip(predictions, reference, strict=True))
    return sum(a[1][0] == b[1][0] for a, b in pairs) / max(1, len(pairs))
