"""pytest configuration only; the helpers tests share live in tests/helpers.py (``from helpers import ...``)."""
import torch

# the suite runs as `pytest -n 2` on 2 cores: one intra-op thread per worker avoids oversubscription,
# which on a loaded machine slows small convs down by 10x or more
torch.set_num_threads(1)
