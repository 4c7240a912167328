"""Training: timm-style train.py logic (recipes, resumable data order, DDP, atomic checkpoints)."""
from .args import load_recipe, parse_args, resolve_args, scaled_lr
from .errors import TrainingInputError
from .main import main

__all__ = ['TrainingInputError', 'load_recipe', 'main', 'parse_args', 'resolve_args', 'scaled_lr']
