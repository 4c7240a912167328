"""Command line, recipe presets and the resolution of relative settings (lr by global batch, warmup lr).

Precedence, lowest first: parser defaults < ``--recipe`` preset < ``--config`` YAML < the args saved in
a ``--resume`` checkpoint < flags given on the command line. Flag names follow timm's train.py.
"""
from __future__ import annotations

import argparse
import ast
import math
import textwrap
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from regzoo.data.transforms import INTERPOLATIONS
from regzoo.training.config import plain
from regzoo.training.errors import TrainingInputError
from regzoo.training.sizes import size_arg, size_step_arg
from regzoo.utils.names import did_you_mean
from regzoo.utils.runtime import ArgumentParser, default_workers

RECIPES = ('pycls', 'improved', 'finetune', 'fast')
# warmups of at most this many epochs are stepped per update unless --sched-on-updates says otherwise
SHORT_WARMUP_EPOCHS = 2
# from-scratch recipes whose per-process batch sets the BatchNorm statistics they were published with
BATCH_SENSITIVE_RECIPES = ('pycls', 'improved')
# keys that describe where this run reads and writes, or the machine it runs on: never inherited from a resumed
# run's args (data-loading workers do not change the result: every image's augmentation is seeded by its index)
_RUN_LOCATION_KEYS = ('resume', 'config', 'output', 'experiment', 'overwrite', 'workers')
# train.py's own eval settings when no starting weight brings its own (pycls: bilinear, resize 256 -> crop 224)
TRAIN_DATA_DEFAULTS = {'input_size': (3, 224, 224), 'crop_pct': 0.875, 'interpolation': 'bilinear'}
_WEIGHT_DEFAULT = "default: the starting weight's (--pretrained / --initial-checkpoint), else "


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's default in --help: '(default: X)' unless the help text already says what the default is."""

    def _get_help_string(self, action):
        if 'default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def _kwarg(text: str) -> tuple[str, Any]:
    """'KEY=VALUE' -> (KEY, VALUE as a Python literal, else the string), as timm's --model-kwargs."""
    key, sep, value = text.partition('=')
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _recipes_epilog() -> str:
    lines = ['recipes (regzoo/training/recipes/NAME.yaml; their values replace the defaults above, flags typed '
             'on the command line win):']
    for name in RECIPES:
        values = ', '.join(f'{k}={v}' for k, v in load_recipe(name).items())
        lines.append(textwrap.fill(f'{name}: {values}', width=100, initial_indent='  ', subsequent_indent='    '))
    return '\n'.join(lines)


def build_parser() -> argparse.ArgumentParser:
    class Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    p = ArgumentParser('train.py', formatter_class=Formatter, epilog=_recipes_epilog(),
                       description='Train or fine-tune a regzoo RegNet (one process, or torchrun DDP). Precedence, '
                                   'lowest first: these defaults < --recipe < --config < a --resume run\'s args < '
                                   'flags typed now.')
    p.add_argument('--recipe', choices=RECIPES, help='named preset, listed at the end (default: none)')
    p.add_argument('-c', '--config', help='YAML file of arg defaults, keys are the flag names with underscores '
                                          '(default: none)')
    g = p.add_argument_group('data')
    g.add_argument('--data-dir', help='the data (required: no default): a folder holding <train-split>/ and '
                                      '<val-split>/ ImageFolder trees (or folders of shards), a folder of WebDataset '
                                      'shards <split>-*.tar, or an HF save_to_disk DatasetDict')
    g.add_argument('--train-split', default='train',
                   help='train split: a folder, <split>-*.tar shards or a DatasetDict split of --data-dir')
    g.add_argument('--val-split', default='val',
                   help='validation split: a folder, <split>-*.tar shards or a DatasetDict split of --data-dir')
    g.add_argument('-j', '--workers', type=int, default=default_workers(),
                   help='data-loading processes per training process (0: load in the main process); '
                        'default: min(available CPUs, 8) = %(default)s')
    g.add_argument('--img-size', type=int, default=None,
                   help='train crop and eval size; ' + _WEIGHT_DEFAULT + '224 (a weight trains at its train size '
                        'and evaluates at its test size)')
    g.add_argument('--train-sizes', nargs='+', type=size_step_arg, default=None, metavar='SIZE[@EPOCH]',
                   help='progressive resizing: train crop sizes from low to high, in pixels or as fractions of '
                        'the train size (e.g. 0.75 0.875 1.0). Without @EPOCH the epochs are split into equal '
                        'consecutive parts, one per size, so the ramp stretches with --epochs / --time-budget; '
                        'SIZE@EPOCH starts a size at that epoch. The batch and lr stay the same at every size '
                        '(default: the train size throughout)')
    g.add_argument('--test-img-size', type=size_arg, default=None, metavar='SIZE',
                   help='eval size, in pixels or as a fraction of the last train size (e.g. 1.15: evaluating '
                        'above the train size corrects the apparent object size of random-resized crops, '
                        'FixRes); written to the run\'s config.json, so validate.py and predict use it '
                        '(default: --img-size, else the starting weight\'s test size)')
    g.add_argument('--crop-pct', type=float, default=None,
                   help='eval: resize to size / crop_pct, center crop; ' + _WEIGHT_DEFAULT + '0.875')
    g.add_argument('--interpolation', choices=INTERPOLATIONS, default=None,
                   help='resize filter, train and eval; ' + _WEIGHT_DEFAULT + 'bilinear')
    g.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN',
                   help='normalization mean; ' + _WEIGHT_DEFAULT + "ImageNet's")
    g.add_argument('--std', type=float, nargs='+', default=None, metavar='STD',
                   help='normalization std; ' + _WEIGHT_DEFAULT + "ImageNet's")
    g.add_argument('--scale', type=float, nargs=2, default=(0.08, 1.0), help='random-resized-crop area range')
    g.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    g.add_argument('--color-jitter', type=float, default=0.4, help='color jitter strength (0: off)')
    g.add_argument('--aa', default=None, help='timm auto-augment spec, e.g. rand-m9-mstd0.5-inc1 (default: none)')
    g.add_argument('--reprob', type=float, default=0.0, help='random erasing probability')
    g.add_argument('--pca-lighting', type=float, default=0.0, help='AlexNet PCA lighting noise std (pycls: 0.1)')
    g.add_argument('--mixup', type=float, default=0.0, help='mixup alpha (0: off)')
    g.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha (0: off)')
    g.add_argument('--mixup-prob', type=float, default=1.0, help='probability of mixing a batch')
    g.add_argument('--mixup-switch-prob', type=float, default=0.5, help='probability of cutmix instead of mixup')
    g.add_argument('--mixup-mode', default='batch', help='mix per batch, pair or elem')
    g.add_argument('--smoothing', type=float, default=0.0, help='label smoothing')
    g = p.add_argument_group('model')
    g.add_argument('--model', default='regnety_032', help='arch, arch.tag or alias (see regzoo.list_models())')
    g.add_argument('--pretrained', action='store_true',
                   help='start from the published weight (the arch\'s default one, or the tag in --model)')
    g.add_argument('--initial-checkpoint', default=None,
                   help='start from these weights: any file or folder regzoo loads, a run folder too (default: none)')
    g.add_argument('--num-classes', type=int, default=None, help='default: the number of class folders')
    g.add_argument('--model-kwargs', nargs='*', type=_kwarg, default=None, metavar='KEY=VALUE',
                   help='more create_model kwargs, e.g. se_ratio=0.25 output_stride=16 (default: none)')
    g.add_argument('--drop', type=float, default=0.0, help='dropout before the classifier')
    g.add_argument('--drop-path', type=float, default=0.0, help='drop-path (stochastic depth) rate')
    g.add_argument('--zero-init-last', action=argparse.BooleanOptionalAction, default=True,
                   help='zero the last BN gamma of each block (timm: on; pycls: off)')
    g.add_argument('--sync-bn', action='store_true', help='SyncBatchNorm across processes (CUDA only)')
    g.add_argument('--channels-last', action='store_true', help='channels_last memory format')
    g.add_argument('--model-ema', action='store_true', help='keep an EMA of the weights (it decides "best")')
    g.add_argument('--model-ema-decay', type=float, default=0.9998, help='EMA decay')
    g.add_argument('--model-ema-warmup', action='store_true', help='ramp the EMA decay up over the first updates')
    g = p.add_argument_group('optimization')
    g.add_argument('--epochs', type=int, default=100, help='epochs to train')
    g.add_argument('--time-budget', type=float, default=None, metavar='MINUTES',
                   help='fit the epoch count to this wall-clock budget (training and validation) from the '
                        'measured speed of a few updates at each train size, timed before the first epoch; the '
                        'plan says what was measured and the count it gives (default: --epochs)')
    g.add_argument('--last-epoch-updates', type=int, default=None, metavar='N',
                   help='cut the last epoch short after N updates: the lr schedule ends there (--time-budget '
                        'sets it to spend what is left of the budget after the whole epochs; default: whole)')
    g.add_argument('-b', '--batch-size', type=int, default=128, help='images per process per step')
    g.add_argument('-vb', '--validation-batch-size', type=int, default=None, help='default: --batch-size')
    g.add_argument('--grad-accum-steps', type=int, default=1, help='micro-batches per update')
    g.add_argument('--opt', default='sgd', help="timm optimizer name: 'sgd' is Nesterov SGD, 'momentum' plain")
    g.add_argument('--momentum', type=float, default=0.9, help='optimizer momentum')
    g.add_argument('--weight-decay', type=float, default=2e-5, help='weight decay')
    g.add_argument('--decay-norm-bias', action=argparse.BooleanOptionalAction, default=False,
                   help='apply weight decay to norm and bias params too (pycls) instead of exempting them (timm)')
    g.add_argument('--clip-grad', type=float, default=None, help='clip the gradient norm to this (default: off)')
    g.add_argument('--lr', type=float, default=None, help='absolute lr; default: --lr-base scaled by global batch')
    g.add_argument('--lr-base', type=float, default=0.1, help='lr per --lr-base-size images of global batch')
    g.add_argument('--lr-base-size', type=int, default=256, help='the global batch --lr-base is given for')
    g.add_argument('--lr-base-scale', choices=('linear', 'sqrt'), default='linear', help='how the lr follows the batch')
    g.add_argument('--sched', choices=('cosine', 'step'), default='cosine', help='lr schedule')
    g.add_argument('--sched-on-updates', action=argparse.BooleanOptionalAction, default=None,
                   help='step the schedule every update, not every epoch; default: every update when the warmup '
                        f'is 1 to {SHORT_WARMUP_EPOCHS} epochs (a per-epoch warmup that short spends whole epochs '
                        'at its start lr), else every epoch (pycls, timm)')
    g.add_argument('--min-lr', type=float, default=0.0, help='lr at the end of the schedule')
    g.add_argument('--decay-epochs', type=float, default=30, help='step schedule: epochs between decays')
    g.add_argument('--decay-rate', type=float, default=0.1, help='step schedule: lr factor per decay')
    g.add_argument('--warmup-epochs', type=int, default=0, help='linear warmup epochs')
    g.add_argument('--warmup-lr', type=float, default=None, help='absolute warmup start lr; default: 1e-5, '
                                                                 'or --warmup-factor x lr')
    g.add_argument('--warmup-factor', type=float, default=None,
                   help='warmup start as a fraction of lr, pycls: 0.1 (default: none)')
    g.add_argument('--cooldown-epochs', type=int, default=0, help='epochs at --min-lr after the schedule')
    g = p.add_argument_group('run')
    g.add_argument('--amp', action='store_true', help='mixed-precision autocast')
    g.add_argument('--amp-dtype', choices=('bfloat16', 'float16'), default='float16', help='autocast dtype')
    g.add_argument('--device', default=None, help='default: cuda when available, else cpu')
    g.add_argument('--torchcompile', nargs='?', const='inductor', default=None, metavar='BACKEND',
                   help='torch.compile the training forward/backward with this backend (the flag alone: inductor); '
                        'weights, EMA and validation use the uncompiled module (default: off)')
    g.add_argument('--torchcompile-mode', default=None,
                   help="torch.compile mode, e.g. max-autotune, reduce-overhead (default: torch's)")
    g.add_argument('--seed', type=int, default=42, help='seeds the init, the data order and every augmentation')
    g.add_argument('--output', default='output/train', help='folder of run folders')
    g.add_argument('--experiment', default=None, help='run folder name under --output; '
                                                      'default: <date>-<time>-<model>-<size>')
    g.add_argument('--overwrite', action='store_true',
                   help='train into a run folder that already holds a run, replacing its files (without it '
                        'such a folder is refused: continue it with --resume or pick a new --experiment)')
    g.add_argument('--resume', default=None, help='continue a run: its folder, or a last.state.pt / last.safetensors '
                                                  '(default: none)')
    g.add_argument('--log-interval', type=int, default=50,
                   help='updates between log lines (progress bars only on a terminal)')
    return p


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise TrainingInputError(f'{what} file not found: {path}') from None
    except yaml.YAMLError as e:
        raise TrainingInputError(f'{what} file {path} is not valid YAML: {e}') from None
    if not isinstance(data, dict):
        raise TrainingInputError(f'{what} file {path} must hold a mapping of arg names to values')
    return data


def load_recipe(name: str) -> dict[str, Any]:
    """The preset ``regzoo/training/recipes/<name>.yaml`` as a dict."""
    if name not in RECIPES:
        raise TrainingInputError(f'unknown recipe {name!r}; choose from {", ".join(RECIPES)}')
    with resources.as_file(resources.files('regzoo.training') / 'recipes' / f'{name}.yaml') as path:
        return read_yaml(path, f'recipe {name!r}')


def _check_keys(values: dict[str, Any], parser: argparse.ArgumentParser, source: str) -> None:
    known = {a.dest for a in parser._actions if a.dest != 'help'}
    for key in values:
        if key not in known:
            raise TrainingInputError(f'{source}: unknown key {key!r}{did_you_mean(key, known)}')


def parse_args(argv: list[str] | None = None, resumed_args: dict[str, Any] | None = None) -> argparse.Namespace:
    """Parse ``argv`` over the preset, config file and resumed-run layers (see module docstring)."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    layers: list[tuple[str, dict[str, Any]]] = []
    if first.recipe:
        layers.append((f'recipe {first.recipe!r}', load_recipe(first.recipe)))
    if first.config:
        layers.append((f'config {first.config}', read_yaml(first.config, 'config')))
    if resumed_args:
        # derived keys (lr_source, world_size, ...) are recomputed, not inherited
        known = {a.dest for a in parser._actions}
        layers.append(('resumed args', {k: v for k, v in resumed_args.items()
                                        if k in known and k not in _RUN_LOCATION_KEYS}))
    for source, values in layers:
        _check_keys(values, parser, source)
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    # which keys the user typed: an absolute value typed now beats a relative one from any preset
    typed = build_parser()
    for action in typed._actions:
        action.default = argparse.SUPPRESS
    args.cli_keys = sorted(vars(typed.parse_args(argv)))
    if isinstance(args.model_kwargs, list):  # typed as KEY=VALUE pairs
        args.model_kwargs = dict(args.model_kwargs)
    if args.model_kwargs is not None and not isinstance(args.model_kwargs, dict):
        raise TrainingInputError(f'model_kwargs must be a mapping of create_model kwargs, got {args.model_kwargs!r}')
    return args


def scaled_lr(lr_base: float, lr_base_size: int, global_batch: int, scale: str = 'linear') -> float:
    """timm/pycls rule: lr = lr_base x (global_batch / lr_base_size), or its square root for 'sqrt'."""
    ratio = global_batch / lr_base_size
    return lr_base * (math.sqrt(ratio) if scale == 'sqrt' else ratio)


def resolve_args(args: argparse.Namespace, world_size: int, recipe_batch_size: int | None = None) -> argparse.Namespace:
    """Fill in lr and warmup_lr from the global batch; returns a new Namespace."""
    args = argparse.Namespace(**vars(args))
    for name in ('batch_size', 'grad_accum_steps', 'epochs'):
        if getattr(args, name) < 1:
            raise TrainingInputError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.time_budget is not None:
        if args.time_budget <= 0:
            raise TrainingInputError(f'--time-budget must be > 0 minutes, got {args.time_budget:g}')
        if 'epochs' in args.cli_keys and 'time_budget' in args.cli_keys:
            raise TrainingInputError('--epochs and --time-budget both set the epoch count: give one of them')
        if 'last_epoch_updates' in args.cli_keys and 'time_budget' in args.cli_keys:
            raise TrainingInputError('--time-budget sets --last-epoch-updates itself: give one of them')
    if 'epochs' in args.cli_keys:  # a resumed budget run given a new length: its fit and cut are not the new one's
        for fitted in ('last_epoch_updates', 'time_budget'):
            if fitted not in args.cli_keys:
                setattr(args, fitted, None)
    if args.last_epoch_updates is not None and args.last_epoch_updates < 1:
        raise TrainingInputError(f'--last-epoch-updates must be >= 1, got {args.last_epoch_updates}')
    args.world_size = world_size
    args.global_batch_size = args.batch_size * world_size * args.grad_accum_steps
    cli = set(args.cli_keys)
    if args.lr is None or ('lr_base' in cli and 'lr' not in cli):
        args.lr = scaled_lr(args.lr_base, args.lr_base_size, args.global_batch_size, args.lr_base_scale)
        args.lr_source = f'{args.lr_base} x {args.global_batch_size}/{args.lr_base_size} ({args.lr_base_scale})'
    else:
        args.lr_source = 'given'
    if args.warmup_factor is not None and ('warmup_lr' not in cli or args.warmup_lr is None):
        args.warmup_lr = args.warmup_factor * args.lr
    elif args.warmup_lr is None:
        args.warmup_lr = 1e-5  # timm's default
    if recipe_batch_size is not None and args.batch_size != recipe_batch_size:
        warnings.warn(
            f'per-process batch {args.batch_size} differs from the {args.recipe} recipe\'s {recipe_batch_size}: '
            'BatchNorm statistics then cover a different number of images, which moves accuracy '
            '(pycls #104); the lr is rescaled by the global batch, and --grad-accum-steps keeps the global batch',
            stacklevel=2)
    return args


def args_to_dict(args: argparse.Namespace) -> dict[str, Any]:
    """Plain YAML/torch.load(weights_only=True)-safe dict of the resolved args (tuples as lists)."""
    return {k: plain(v) for k, v in sorted(vars(args).items())}
