"""Classify images: top-k class labels and probabilities, with the model's own eval transform and label names.

    preds = regzoo.predict(model, ['cat.jpg', 'dog.png'], topk=5)
    preds[0][0]   # Prediction(index=281, label='tabby, tabby cat', probability=0.83, name='n02123045')

The transform is the model's eval transform (``regzoo.eval.transform.eval_transform``: its
weight's test size, crop and interpolation); a 1-channel model reads the images as greyscale, as validate.py
does. Labels: the ``labels=`` given (a fine-tuned run's class names: ``checkpoint_label_names(RUN)``), else what
the model's ``pretrained_cfg`` carries (``label_names``, the descriptions of its label set: ImageNet-1k names ship
with regzoo), else the class indices (``class_labels``). ``predict_paths`` is the batched, multi-process version
behind ``python -m regzoo.cli.predict``: it reports unreadable images instead of raising; given a faster
``forward`` (an ``optimize_for_inference`` or int8 model) and ``Agreement``, it also counts how often that model's
top-1 class is the fp32 model's.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image

from regzoo.data.datasets import IMAGE_EXTENSIONS, EvalDataset, SkippedImage, collate_eval, load_rgb
from regzoo.data.labels import LABEL_SETS, label_descriptions, label_names
from regzoo.eval.loop import top1_matches
from regzoo.eval.transform import eval_transform
from regzoo.utils.names import natural_key

_logger = logging.getLogger(__name__)
ImageInput = str | os.PathLike | Image.Image


@dataclass(frozen=True)
class Prediction:
    """One of an image's top-k classes."""
    index: int            # classifier output index
    label: str            # human-readable: an ImageNet description, a run's class name, or the index as text
    probability: float    # softmax probability
    name: str | None = None  # the class id when the model carries one: a wnid, a class folder name

    def to_dict(self) -> dict:
        return asdict(self)


def _cfg_value(cfg, key: str):
    """A field of a pretrained cfg, whether a dataclass, a timm-style mapping or absent."""
    if cfg is None:
        return None
    if isinstance(cfg, Mapping):
        return cfg.get(key)
    return getattr(cfg, key, None)


def _num_classes(model: nn.Module) -> int:
    num_classes = getattr(model, 'num_classes', None)
    if num_classes is None:
        head = model.get_classifier() if hasattr(model, 'get_classifier') else None
        num_classes = getattr(head, 'out_features', 0)
    return int(num_classes or 0)


def class_labels(model: nn.Module, labels: Sequence[str] | None = None,
                 ) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """(class ids, human-readable labels) of ``model``'s classifier, each None when unknown.

    ``labels`` (class names in classifier order, e.g. a run's class folders; see ``checkpoint_label_names``)
    win; else ``model.pretrained_cfg``'s ``label_names`` / ``label_descriptions`` when they fit the head
    (descriptions as timm's {id: description} dict or a list), else the ids and descriptions of its
    ``label_set`` ('imagenet-1k': wnids and WordNet names) when the head has that many classes.
    """
    n = _num_classes(model)

    def fitting(values) -> tuple[str, ...] | None:
        values = tuple(str(v) for v in values) if values is not None and len(values) else None
        return values if values and len(values) == n else None

    if labels is not None:
        names = fitting(labels)
        if names is None:
            raise ValueError(f'{len(labels)} labels for a {n}-class classifier')
        return names, None
    cfg = getattr(model, 'pretrained_cfg', None)
    names, descriptions = fitting(_cfg_value(cfg, 'label_names')), _cfg_value(cfg, 'label_descriptions')
    if isinstance(descriptions, Mapping):
        descriptions = tuple(descriptions.get(name, name) for name in names) if names else None
    descriptions = fitting(descriptions)
    label_set = _cfg_value(cfg, 'label_set')
    if label_set in LABEL_SETS and (names is None or descriptions is None):
        set_names = label_names(label_set)
        if len(set_names) == n and (names is None or names == set_names):
            names, descriptions = set_names, descriptions or label_descriptions(label_set)
    return names, descriptions


def checkpoint_label_names(path: str | os.PathLike) -> tuple[str, ...] | None:
    """The class names a saved checkpoint's config.json records (timm's top-level ``label_names``, or inside its
    ``pretrained_cfg``: a fine-tuned run's class folders), without reading its weights; None when it has none."""
    from regzoo.zoo.loading import config_label_names, resolve_checkpoint
    return config_label_names(resolve_checkpoint(path, log=False)[1])


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


class _Labeller:
    """Logits -> top-k ``Prediction`` lists, with the model's labels resolved once."""

    def __init__(self, model: nn.Module, topk: int, labels: Sequence[str] | None = None):
        num_classes = _num_classes(model)
        if not num_classes:
            raise ValueError('the model has no classifier (num_classes=0): nothing to predict; '
                             'build it with its head (num_classes > 0)')
        if topk < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        self.topk = min(topk, num_classes)
        self.names, self.descriptions = class_labels(model, labels)

    def __call__(self, logits: torch.Tensor) -> list[list[Prediction]]:
        probs = logits.float().softmax(dim=-1)
        top = probs.topk(self.topk, dim=-1)
        out = []
        for values, indices in zip(top.values.tolist(), top.indices.tolist()):
            out.append([Prediction(i, self._label(i), p, self.names[i] if self.names else None)
                        for p, i in zip(values, indices)])
        return out

    def _label(self, i: int) -> str:
        if self.descriptions:
            return self.descriptions[i]
        return self.names[i] if self.names else str(i)


class _EvalMode:
    """``with _EvalMode(model):`` runs in eval mode and gives the model back in the mode it had."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def predict(model: nn.Module, images: ImageInput | Sequence[ImageInput], topk: int = 5, *,
            batch_size: int = 32, labels: Sequence[str] | None = None) -> list[list[Prediction]]:
    """Top-``topk`` predictions per image, best first: ``[[Prediction(index, label, probability, name), ...], ...]``.

    Args:
        model: a classifier (its ``pretrained_cfg`` gives the eval transform and the labels; see ``class_labels``).
        images: an image file path, a PIL image, or a sequence of them; one result list per image, in order.
        topk: how many classes per image (capped at the number of classes).
        batch_size: images per forward pass.
        labels: class names in classifier order, instead of what the model carries (``class_labels``).

    Runs on the model's device, in eval mode, without autograd; the model's train/eval mode is restored.
    An image that cannot be read raises (``OSError`` naming it); ``predict_paths`` skips them instead.
    """
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
    labeller = _Labeller(model, topk, labels)
    transform, device = eval_transform(model), _device(model)
    results: list[list[Prediction]] = []
    with _EvalMode(model), torch.inference_mode():
        for start in range(0, len(items), batch_size):
            batch = []
            for item in items[start:start + batch_size]:
                if isinstance(item, Image.Image):
                    img = item.convert('RGB') if item.mode != 'RGB' else item
                else:
                    try:
                        img = load_rgb(item)
                    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                        raise OSError(f'{item}: cannot read the image ({type(err).__name__}: {err})') from err
                batch.append(transform(img))
            results += labeller(model(torch.stack(batch).to(device)))
    return results


def find_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Image files named in ``inputs``: files as given, folders searched recursively (image extensions only,
    naturally sorted). A path that does not exist raises ``FileNotFoundError``."""
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = [os.path.join(d, f) for d, _, names in os.walk(path, followlinks=True) for f in names
                     if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
            if not files:
                raise FileNotFoundError(f'{path}: no images in this folder (extensions: '
                                        f'{", ".join(sorted(IMAGE_EXTENSIONS))})')
            found += sorted(files, key=natural_key)
        elif path.exists():
            found.append(str(path))
        else:
            raise FileNotFoundError(f'{path}: no such file or folder')
    return found


class Agreement:
    """Runs ``model`` and its fp32 ``reference`` on each batch, counts the images where their top-1 classes agree,
    and returns ``model``'s logits: ``predict_paths(fp32, paths, forward=Agreement(int8, fp32))``."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], reference: nn.Module):
        self.model, self.reference = model, reference
        self.same = self.total = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.same += top1_matches(out, self.reference(x))
        self.total += len(x)
        return out

    @property
    def fraction(self) -> float | None:
        return self.same / self.total if self.total else None


def image_folder_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` cannot serve as a folder of images (missing, not a folder, no images in it), else None."""
    if not Path(folder).is_dir():
        return f'{folder} does not exist or is not a folder'
    try:
        find_images([folder])
    except FileNotFoundError as e:
        return str(e)
    return None


def predict_paths(
        model: nn.Module, paths: Sequence[str], topk: int = 5, *, batch_size: int = 32, workers: int = 0,
        labels: Sequence[str] | None = None, on_batch=None,
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[str, list[Prediction] | SkippedImage]]:
    """``(path, predictions)`` per image in order, or ``(path, SkippedImage)`` for one that cannot be read.

    Images are decoded and transformed by ``workers`` DataLoader processes, ``batch_size`` at a time;
    ``on_batch(n)`` is called with the number of images of each batch done (progress reporting).
    ``model`` gives the transform, the labels and the device; ``forward`` (default: ``model``) computes the
    logits: a fast or int8 version of ``model``, or an ``Agreement`` of one with ``model``.
    """
    labeller = _Labeller(model, topk, labels)
    dataset = EvalDataset([(p, 0) for p in paths], {}, eval_transform(model))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=collate_eval)
    device = _device(model)
    forward = forward or model
    start = 0
    with _EvalMode(model), torch.inference_mode():
        for images, _, indices, skipped in loader:
            done = {}
            if images is not None:
                done = dict(zip(indices.tolist(), labeller(forward(images.to(device)))))
            # the batch covers the next len(done) + len(skipped) paths; collate_eval kept the skipped ones in order
            skipped_in_order = iter(skipped)
            count = len(done) + len(skipped)
            for index in range(start, start + count):
                yield paths[index], done[index] if index in done else next(skipped_in_order)
            start += count
            if on_batch is not None:
                on_batch(count)
