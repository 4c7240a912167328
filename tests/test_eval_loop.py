"""The one top-k loop (validate.py and training both count with it), on logits whose answers are known."""
from __future__ import annotations

import torch
import torch.nn as nn

from regzoo.eval.loop import count_topk


class FixedLogits(nn.Module):
    """Returns the logits it was given for each input index: images are just row numbers here."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0, 0, 0].long()]


def _batches(targets: list[int], batch_size: int):
    index = torch.arange(len(targets)).float().view(-1, 1, 1, 1)
    return list(zip(index.split(batch_size), torch.tensor(targets).split(batch_size)))


def test_counts_topk_loss_and_predictions():
    torch.manual_seed(0)
    logits = torch.randn(10, 8)
    targets = [int(logits[i].argsort(descending=True)[i % 7]) for i in range(10)]  # rank i % 7 of each row
    running = []
    counts = count_topk(FixedLogits(logits), _batches(targets, 4), 'cpu', criterion=nn.CrossEntropyLoss(
        reduction='sum'), keep_predictions=True, on_batch=lambda *sums: running.append(sums))
    ranks = [i % 7 for i in range(10)]
    assert counts.num_images == 10
    assert counts.correct1 == sum(r == 0 for r in ranks) and counts.correct5 == sum(r < 5 for r in ranks)
    expected_loss = nn.functional.cross_entropy(logits, torch.tensor(targets), reduction='sum').item()
    assert abs(counts.loss_sum - expected_loss) <= 1e-4 * expected_loss
    assert counts.predictions == tuple((t, tuple(logits[i].topk(5).indices.tolist())) for i, t in enumerate(targets))
    assert [n for n, _, _ in running] == [4, 8, 10] and running[-1][1:] == (counts.correct1, counts.correct5)


def test_topk_is_capped_at_the_class_count_and_predictions_are_opt_in():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.2], [0.3, 0.2, 0.1]])
    counts = count_topk(FixedLogits(logits), _batches([1, 2, 2], 2), 'cpu')
    # three classes: "top-5" is top-3, so every target is in it
    assert (counts.num_images, counts.correct1, counts.correct5, counts.loss_sum) == (3, 1, 3, 0.0)
    assert counts.predictions == ()
