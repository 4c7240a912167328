"""Training: timm-style train.py logic (recipes, resumable data order, DDP, atomic checkpoints)."""
from regzoo.training.args import load_recipe, parse_args, resolve_args, scaled_lr
from regzoo.training.errors import TrainingInputError
from regzoo.training.main import main

__all__ = ['TrainingInputError', 'load_recipe', 'main', 'parse_args', 'resolve_args', 'scaled_lr']
