import pytest
import torch

from regzoo.benchmark import randomize_bn  # noqa: F401  (shared with the benchmark: same weights for every variant)

# the suite runs as `pytest -n 2` on 2 cores: one intra-op thread per worker avoids oversubscription,
# which on a loaded machine slows small convs down by 10x or more
torch.set_num_threads(1)

# SEER sizes: 0.6-1.3 B parameters; building them costs many GB and seconds, so their heavy checks are opt-in
HUGE_ARCHS = ('regnety_1280', 'regnety_2560')


def arch_params(names):
    """pytest params over arch names, with the SEER giants marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in HUGE_ARCHS else n for n in names]


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
