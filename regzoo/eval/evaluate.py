"""ImageNet-style evaluation behind validate.py: one weight or a wildcard of weights -> top-1/top-5 rows.

The eval transform comes from ``regzoo.data`` (the weight's test cfg, flags override); classes are
indexed in the weights' label order (``regzoo.datasets``); undecodable images are logged, counted
in the result and excluded from the accuracy -- never dropped silently.

``evaluate_variants`` also scores faster versions of the same model (validate.py's ``--fast`` and ``--int8``:
``optimize_for_inference``, ``regzoo.quantize``) on the same images, one row each beside the fp32 row, with
how often each one's top-1 class agrees with fp32's: the cost of the speed on the user's own data. This layer
does not import the deploy layer that makes them: the caller passes the ``Variant`` functions.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from regzoo.data.datasets import SkippedImage, collate_eval, read_class_map
from regzoo.data.sharding import gather_objects
from regzoo.data.sources import open_eval_split
from regzoo.data.transforms import DataConfig, resolve_data_config
from regzoo.eval.loop import Prediction, TopkCounts, count_topk, predictions_top1_agreement
from regzoo.eval.transform import eval_transform
from regzoo.utils.runtime import Progress, default_workers
from regzoo.utils.timing import Stopwatch, device_synchronizer
from regzoo.zoo.builder import create_model
from regzoo.zoo.loading import resolve_checkpoint
from regzoo.zoo.metrics import PublishedRef, lookup_published
from regzoo.zoo.registry import REGISTRY, list_models, model_entrypoint

_logger = logging.getLogger(__name__)
# (the fp32 model, in eval mode on its device; its eval data config; its eval transform) -> the model to score
Variant = Callable[[nn.Module, DataConfig, Callable], nn.Module]


@dataclass(frozen=True)
class EvalOptions:
    """How to run: everything validate.py takes besides the model name and the eval-transform overrides."""
    data_dir: str                       # an image folder, WebDataset shards or an HF dataset (regzoo.data.locate)
    pretrained: bool = False
    checkpoint: str | None = None
    num_classes: int | None = None
    batch_size: int = 256
    workers: int = field(default_factory=default_workers)  # min(available CPUs, 8)
    device: str = 'cpu'
    channels_last: bool = False
    amp_dtype: torch.dtype | None = None
    torchcompile: str | None = None
    class_map: str | None = None
    label_file: str | None = None
    num_samples: int | None = None
    log_freq: int = 10
    pin_mem: bool = False
    use_train_size: bool = False
    published_file: str | None = None
    progress: bool | None = None        # None: a bar only on a terminal
    split: str | None = None            # a DatasetDict's / shard folder's split (None: val, validation)


@dataclass(frozen=True)
class EvalResult:
    """One evaluated weight. The first nine fields are timm's results-file columns, in timm's order."""
    model: str
    img_size: int
    top1: float
    top1_err: float
    top5: float
    top5_err: float
    param_count: float                  # millions, 2 decimals (timm's convention)
    crop_pct: float
    interpolation: str
    crop_mode: str
    loss: float
    num_images: int
    num_skipped: int
    samples_per_sec: float
    published_top1: float | None = None
    published_top5: float | None = None
    top1_diff: float | None = None
    top5_diff: float | None = None
    published_source: str | None = None
    variant: str = 'fp32'                # or the faster model's name: 'fast', 'int8'
    top1_agree_fp32: float | None = None  # % of images where a variant's top-1 class is the fp32 model's
    # per image, in dataset order: (target, top-k predicted indices); not part of the results row
    predictions: tuple[Prediction, ...] = ()
    skipped: tuple[SkippedImage, ...] = ()

    def row(self) -> dict:
        skip = {'predictions', 'skipped'}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


@dataclass(frozen=True)
class EvalCounts:
    """The eval loop's sums plus what only validate.py tracks: wall time and the images it could not read."""
    topk: TopkCounts
    seconds: float
    skipped: tuple[SkippedImage, ...]


def _batches(loader: Iterable) -> int | None:
    """The loader's batch count; None when it cannot know it (a DataLoader over shards, a generator)."""
    try:
        return len(loader)
    except TypeError:
        return None


def run_eval(model: nn.Module, loader: Iterable, opts: EvalOptions, desc: str = '') -> EvalCounts:
    """Top-1/top-5 counts, per-image predictions and summed loss of ``model`` over ``loader`` (batches from
    ``collate_eval``), by the eval loop; unreadable images are logged and returned, not counted. Under DDP
    (each process holding its share of the images) the counts are those of all processes together."""
    skipped: list[SkippedImage] = []
    # a bar on a terminal; log lines (every log_freq batches) otherwise
    progress = Progress(_batches(loader), desc, unit='batch',
                        enabled=opts.progress, every=opts.log_freq or None, logger=_logger,
                        interval=float('inf'))  # log_freq 0: no log lines

    def readable():
        for images, targets, _, bad in loader:
            for item in bad:
                _logger.warning('skipped unreadable image %s (%s)', item.path, item.reason)
            skipped.extend(bad)
            if images is not None:
                yield images, targets
            else:  # a batch with no readable image still counts as a batch done
                progress.update(1)

    def on_batch(n: int, correct1: int, correct5: int) -> None:
        progress.update(1, top1=f'{100 * correct1 / n:.2f}', line=lambda: '%s [%d/%s] top1 %.3f top5 %.3f' % (
            desc, progress.count, progress.total or '?', 100 * correct1 / n, 100 * correct5 / n))

    with progress, Stopwatch(device_synchronizer(opts.device)) as watch:
        counts = count_topk(
            model, readable(), opts.device, amp_dtype=opts.amp_dtype,
            memory_format=torch.channels_last if opts.channels_last else torch.contiguous_format,
            criterion=nn.CrossEntropyLoss(reduction='sum'), keep_predictions=True, on_batch=on_batch)
    return merge_over_ranks(EvalCounts(counts, watch.seconds, tuple(skipped)))


def merge_over_ranks(counts: EvalCounts) -> EvalCounts:
    """Under DDP, where each rank scored its own share of the images, the sums over all ranks (time: the slowest)."""
    parts = gather_objects(counts)
    if len(parts) == 1:
        return counts
    topk = TopkCounts(*(sum(getattr(p.topk, f) for p in parts) for f in ('num_images', 'correct1', 'correct5',
                                                                          'loss_sum')),
                      predictions=tuple(x for p in parts for x in p.topk.predictions))
    return EvalCounts(topk, max(p.seconds for p in parts), tuple(x for p in parts for x in p.skipped))


def checkpoint_config(path: str) -> dict:
    """The config a checkpoint path carries (a saved folder's or a train.py run's config.json; {} if none),
    read without its tensors; unreadable or non-weights paths raise here, before any model is built."""
    return resolve_checkpoint(path, log=False)[1]


def checkpoint_architecture(path: str) -> str:
    """The architecture a checkpoint's config.json names (what ``--model`` defaults to with ``--checkpoint``)."""
    arch = checkpoint_config(path).get('architecture')
    if not arch:
        raise ValueError(f'--model is required: checkpoint {path} has no config.json naming its architecture')
    return arch


def _build_model(name: str, opts: EvalOptions) -> nn.Module:
    """The model with its weights, through ``create_model`` like every other entry point.

    The builder re-initialises a classifier of another size than the weights' (right for fine-tuning);
    scoring such a head would be meaningless, so with weights the head is theirs and ``--num-classes``
    only checks it.
    """
    model_entrypoint(name)  # an unknown name raises here, with close matches, not as a checkpoint problem
    if opts.checkpoint:
        checkpoint_config(opts.checkpoint)  # a missing, unreadable or non-weights file says so itself, unwrapped
    with_weights = bool(opts.pretrained or opts.checkpoint)
    try:
        model = create_model(name, pretrained=opts.pretrained, checkpoint_path=opts.checkpoint,
                             num_classes=None if with_weights else opts.num_classes)
    except (RuntimeError, KeyError, ValueError) as err:
        if not opts.checkpoint:
            raise
        raise ValueError(f'checkpoint {opts.checkpoint} does not load into {name!r}: {err}') from err
    if not with_weights:
        return model
    source = f'checkpoint {opts.checkpoint}' if opts.checkpoint else model.pretrained_cfg.name
    if not model.num_classes:
        raise ValueError(f'{source} has no classifier (head.fc); nothing to validate')
    if opts.num_classes and opts.num_classes != model.num_classes:
        raise ValueError(f'--num-classes {opts.num_classes} but {source} has a {model.num_classes}-class classifier')
    return model


def evaluate_weight(name: str, opts: EvalOptions, overrides: dict | None = None) -> EvalResult:
    """Build ``name`` (arch or arch.tag), evaluate it on ``opts.data_dir`` and compare with the published numbers."""
    return evaluate_variants(name, opts, overrides)[0]


def evaluate_variants(name: str, opts: EvalOptions, overrides: dict | None = None,
                      variants: Mapping[str, Variant] | None = None) -> list[EvalResult]:
    """``evaluate_weight``'s fp32 row, then one row per ``variants`` entry (name -> what makes the model to score
    from the fp32 one), on the same images; variants run without ``amp_dtype`` / ``channels_last`` /
    ``torchcompile``, which are the fp32 row's."""
    model = _build_model(name, opts)
    num_classes = model.num_classes
    if not num_classes:
        raise ValueError(f'{name} has no classifier (num_classes=0); validate needs logits')
    cfg = getattr(model, 'pretrained_cfg', None)
    # a checkpoint with another head (a fine-tune) is not the tagged weight: no label set, no published number
    weight = cfg if cfg is not None and cfg.num_classes == num_classes else None
    arch, tag = REGISTRY.split(name)  # aliases ('RegNetY-3.2GF') report under the registered arch name
    full_name = weight.name if weight is not None and (opts.pretrained or tag) else arch
    # in_chans: an --img-size override keeps the model's channel count (the cfg's input_size is replaced)
    data_config = resolve_data_config({'in_chans': model.in_chans, **(overrides or {})}, model=model,
                                      use_test_size=not opts.use_train_size)
    class_map = read_class_map(opts.class_map) if opts.class_map else None
    if class_map is None and opts.checkpoint and not opts.label_file:
        # a trained run's classes (its class folder names, which the model built from it carries) in its
        # classifier's order, not a re-sort of today's folders
        names = cfg.class_names if cfg is not None else None
        if names is not None and len(names) == num_classes:
            class_map = {str(n): i for i, n in enumerate(names)}
    transform = eval_transform(model, data_config)
    dataset = open_eval_split(
        opts.data_dir, transform, num_classes=num_classes, split=opts.split,
        label_set=weight.label_set if weight is not None else None, label_file=opts.label_file,
        num_samples=opts.num_samples, class_map=class_map)
    param_count = sum(p.numel() for p in model.parameters())
    _logger.info('%s: %d params, eval cfg %s', full_name, param_count, data_config)

    model = model.to(opts.device).eval()
    made = {key: make(model, data_config, transform) for key, make in (variants or {}).items()}
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if opts.torchcompile:
        model = torch.compile(model, backend=opts.torchcompile)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=opts.batch_size, shuffle=False, num_workers=opts.workers, collate_fn=collate_eval,
        pin_memory=opts.pin_mem, persistent_workers=False)
    counts = run_eval(model, loader, opts, desc=full_name)
    if counts.topk.num_images == 0:
        raise ValueError(f'none of the {len(counts.skipped)} images in {opts.data_dir} could be read '
                         f'({len(counts.skipped)} skipped)')
    ref = lookup_published(full_name, opts.published_file) if weight is not None else None
    results = [_make_result(full_name, data_config, param_count, counts, ref)]
    plain = dataclasses.replace(opts, amp_dtype=None, channels_last=False, torchcompile=None)
    for key, variant_model in made.items():
        variant_counts = run_eval(variant_model, loader, plain, desc=f'{full_name} [{key}]')
        agreement = predictions_top1_agreement(variant_counts.topk.predictions, counts.topk.predictions)
        results.append(_make_result(full_name, data_config, param_count, variant_counts, ref, key,
                                    round(100 * agreement, 3)))
    return results


def _make_result(
        name: str, cfg: DataConfig, param_count: int, counts: EvalCounts, ref: PublishedRef | None,
        variant: str = 'fp32', top1_agree_fp32: float | None = None,
) -> EvalResult:
    n = counts.topk.num_images
    top1 = 100 * counts.topk.correct1 / n
    top5 = 100 * counts.topk.correct5 / n
    has1, has5 = ref is not None and ref.top1 is not None, ref is not None and ref.top5 is not None
    return EvalResult(
        model=name, img_size=cfg.img_size, top1=round(top1, 3), top1_err=round(100 - top1, 3),
        top5=round(top5, 3), top5_err=round(100 - top5, 3), param_count=round(param_count / 1e6, 2),
        crop_pct=cfg.crop_pct, interpolation=cfg.interpolation, crop_mode=cfg.crop_mode,
        loss=round(counts.topk.loss_sum / n, 4), num_images=n,
        num_skipped=len(counts.skipped), samples_per_sec=round(n / counts.seconds, 2),
        published_top1=ref.top1 if has1 else None, published_top5=ref.top5 if has5 else None,
        top1_diff=round(top1 - ref.top1, 3) if has1 else None, top5_diff=round(top5 - ref.top5, 3) if has5 else None,
        published_source=ref.source if ref is not None else None, variant=variant, top1_agree_fp32=top1_agree_fp32,
        predictions=counts.topk.predictions, skipped=counts.skipped)


def expand_model_names(pattern: str, pretrained: bool) -> list[str]:
    """A name, or every registered arch (or ``arch.tag`` with ``pretrained``) matching an fnmatch pattern."""
    if not any(c in pattern for c in '*?['):
        return [pattern]
    names = list_models(pattern, pretrained=pretrained)
    if not names:
        what = 'pretrained weights' if pretrained else 'architectures'
        raise ValueError(f'no {what} match {pattern!r}' + ('' if pretrained else ' (see regzoo.list_models())'))
    return names
