"""Evaluation datasets: an ImageFolder split or the flat ILSVRC2012 val layout, labelled in the weights' order.

Class indices follow the weights' label set (ImageNet-1k: the sorted WordNet synset list timm ships),
not the folders that happen to be present, so a 10-class subset of val still scores 1000-way
correctly. Unreadable images are returned as ``SkippedImage`` records, logged and counted by the
caller -- never dropped silently.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from regzoo.data.labels import label_names
from regzoo.utils.names import close_matches, natural_key

_logger = logging.getLogger(__name__)

# timm.data.get_img_extensions() (tests/test_layers.py checks they agree), written out so that importing
# this module does not load timm
IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png'})
_WNID = re.compile(r'^n\d{8}$')
# timm's ImageNetInfo subsets; the num_classes -> label set guess is timm's too (timm.data.infer_imagenet_subset)
_LABEL_SET_BY_NUM_CLASSES = {1000: 'imagenet-1k', 11821: 'imagenet-12k'}


@dataclass(frozen=True)
class SkippedImage:
    """An image that could not be decoded; stands in for the sample so the loop can log and count it."""
    path: str
    reason: str


def infer_label_set(num_classes: int, class_names: list[str], declared: str | None = None) -> str | None:
    """The weights' label set: the pretrained cfg's, else ImageNet's when the head size and wnid folders say so."""
    if declared:
        return declared
    guess = _LABEL_SET_BY_NUM_CLASSES.get(num_classes)
    if guess and any(_WNID.match(c) for c in class_names):
        return guess
    return None


def read_class_map(path: str | os.PathLike) -> dict[str, int]:
    """A class name -> index map: ``.txt`` one name per line (index = line, timm's format) or ``.json`` dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'class map file {path} does not exist')
    if path.suffix == '.json':
        mapping = json.loads(path.read_text())
        if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
            raise ValueError(f'class map {path} must be a JSON object of class name -> int index')
        return {str(k): v for k, v in mapping.items()}
    if path.suffix == '.txt':
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return {name: index for index, name in enumerate(names)}
    raise ValueError(f'class map {path}: unsupported extension {path.suffix!r} (use .txt or .json)')


def load_rgb(path: str | os.PathLike | BinaryIO) -> Image.Image:
    """Decode an image fully and convert it to 8-bit RGB.

    Grayscale is replicated, CMYK goes through PIL's conversion and alpha is dropped (as PIL,
    timm and torchvision do, so scores match the published evals); 16-bit grayscale is scaled
    to 8 bits rather than clipped. Decoding errors (truncated or corrupt files) raise OSError.
    """
    with Image.open(path) as img:
        img.load()  # decode now, so truncation surfaces here and not later inside the transform
        if img.mode in ('I', 'I;16', 'I;16B', 'I;16L'):
            wide = np.asarray(img, dtype=np.float64)
            return Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8)).convert('RGB')
        if img.mode == 'P':
            img = img.convert('RGBA')  # palette transparency must go through RGBA to be honoured
        return img.convert('RGB')


class EvalDataset(torch.utils.data.Dataset):
    """(path, target) samples -> (image tensor, target, index), or a ``SkippedImage`` for a bad file."""

    def __init__(self, samples: list[tuple[str, int]], class_to_idx: dict[str, int], transform=None):
        self.samples = samples
        self.class_to_idx = class_to_idx
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        return eval_sample(path, path, target, index, self.transform)


def eval_sample(source, name: str, target: int, index: int, transform=None):
    """``(transform(image), target, index)`` for the image at ``source`` (a path or a file object of its bytes),
    or a ``SkippedImage`` naming ``name`` when it cannot be decoded."""
    try:
        img = load_rgb(source)
        return (transform(img) if transform else img), target, index
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # PIL names a file object by its repr ('<_io.BytesIO object at 0x...>'): name the image instead
        return SkippedImage(name, f'{type(err).__name__}: {err}'.replace(repr(source), repr(name)))


def collate_eval(batch: list) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, list]:
    """Stack the decodable samples; pass the skipped ones through for the caller to log and count."""
    skipped = [item for item in batch if isinstance(item, SkippedImage)]
    good = [item for item in batch if not isinstance(item, SkippedImage)]
    if not good:
        return None, None, None, skipped
    # default_collate stacks straight into shared memory inside a worker: no extra copy through the queue
    images, targets, indices = torch.utils.data.default_collate(good)
    return images, targets, indices, skipped


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _find_split(root: Path) -> Path:
    """ImageNet roots hold train/ and val/; like timm, validate the val split when pointed at the root."""
    for split in ('val', 'validation'):
        if (root / split).is_dir() and not any(_is_image(p.name) for p in root.iterdir() if p.is_file()):
            _logger.info('using the %s split under %s', split, root)
            return root / split
    return root


def resolve_class_to_idx(
        class_names: list[str], num_classes: int, label_set: str | None = None, class_map: dict[str, int] | None = None,
) -> dict[str, int]:
    """Class name -> classifier index: an explicit class map, else the label set's order, else timm's folder sort."""
    if class_map is not None:
        mapping, origin = dict(class_map), 'the class map'
    elif label_set is not None:
        mapping, origin = {name: i for i, name in enumerate(label_names(label_set))}, f'the {label_set} label set'
    else:
        mapping = {name: i for i, name in enumerate(sorted(class_names, key=natural_key))}
        origin = 'the sorted class folders'
    unknown = [c for c in class_names if c not in mapping]
    if unknown:
        hints = {c: close_matches(c, mapping, n=1) for c in unknown[:5]}
        detail = ', '.join(f'{c!r}' + (f' (did you mean {h[0]!r}?)' if h else '') for c, h in hints.items())
        raise ValueError(f'{len(unknown)} class(es) not in {origin}: {detail}'
                         + (' ...' if len(unknown) > 5 else '')
                         + ('; ImageNet weights need wnid folder names such as n01440764' if label_set else '')
                         + '; pass --class-map FILE to map them')
    too_big = {c: mapping[c] for c in class_names if not 0 <= mapping[c] < num_classes}
    if too_big:
        raise ValueError(f'{origin} gives indices outside the model\'s {num_classes} classes: '
                         f'{dict(list(too_big.items())[:5])}; check --num-classes or --class-map')
    return mapping


def scan_image_folder(root: Path) -> dict[str, list[str]]:
    """Class folder name -> its image paths (searched recursively, naturally sorted)."""
    classes = {}
    for class_dir in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        files = [os.path.join(d, f) for d, _, names in os.walk(class_dir, followlinks=True) for f in names]
        images = sorted((f for f in files if _is_image(f)), key=natural_key)
        if not images:
            _logger.warning('class folder %s holds no images', class_dir)
        classes[class_dir.name] = images
    return classes


def read_label_file(path: str | os.PathLike, image_paths: list[str]) -> dict[str, str]:
    """Image path -> class name (or int index as text) for a flat val folder.

    Formats: Kaggle's ``LOC_val_solution.csv`` (ImageId,PredictionString), ``<file> <label>`` per
    line (label: a wnid/class name, or an int index in the weights' order), or one wnid per line
    in sorted filename order. Bare integers per line are refused: the devkit's
    ``ILSVRC2012_validation_ground_truth.txt`` numbers classes in meta.mat order, not synset order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'label file {path} does not exist')
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    by_stem = {Path(p).stem: p for p in image_paths}
    if lines and lines[0].replace(' ', '').lower().startswith('imageid,predictionstring'):
        pairs = [(row[0], row[1].split()[0]) for row in csv.reader(lines[1:])]
    elif lines and all(len(line.split()) == 1 for line in lines):
        if all(line.isdigit() for line in lines):
            raise ValueError(f'{path}: bare integer labels are ambiguous (devkit ground-truth ids follow meta.mat, '
                             'not the synset order); use "<file> <wnid>" lines or LOC_val_solution.csv')
        if len(lines) != len(image_paths):
            raise ValueError(f'{path} has {len(lines)} labels for {len(image_paths)} images; '
                             'one-label-per-line files must cover every image, in sorted filename order')
        return dict(zip(sorted(image_paths, key=natural_key), lines))
    else:
        pairs = [tuple(line.replace(',', ' ').split()[:2]) for line in lines]
    labels = {Path(name).stem: label for name, label in pairs}
    missing = [stem for stem in by_stem if stem not in labels]
    if missing:
        raise ValueError(f'{len(missing)} image(s) in the val folder have no label in {path}, e.g. {missing[:3]}')
    return {p: labels[stem] for stem, p in by_stem.items()}


def build_eval_dataset(
        data_dir: str | os.PathLike, transform=None, *, num_classes: int, label_set: str | None = None,
        class_map: dict[str, int] | None = None, label_file: str | os.PathLike | None = None,
        num_samples: int | None = None,
) -> EvalDataset:
    """An ``EvalDataset`` over an ImageFolder split (``DIR/<class>/*``) or a flat folder + ``label_file``.

    ``label_set`` is the weights' declared one (e.g. 'imagenet-1k'); when None it is inferred from
    ``num_classes`` and wnid folder names. ``num_samples`` keeps the first N images (in sorted order).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f'data dir {root} does not exist or is not a directory')
    root = _find_split(root)
    flat_images = sorted((str(p) for p in root.iterdir() if p.is_file() and _is_image(p.name)), key=natural_key)
    if flat_images and any(p.is_dir() for p in root.iterdir()):
        raise ValueError(f'{root} mixes image files and class folders; use one layout '
                         '(DIR/<class>/*.JPEG, or flat images plus --label-file)')
    if flat_images:
        if label_file is None:
            raise ValueError(f'{root} holds images but no class folders: the flat ILSVRC2012 val layout '
                             'needs a ground-truth label file (--label-file)')
        labels = read_label_file(label_file, flat_images)
        by_class: dict[str, list[str]] = {}
        for image in flat_images:
            by_class.setdefault(labels[image], []).append(image)
    else:
        by_class = scan_image_folder(root)
    if not any(by_class.values()):
        raise ValueError(f'no images found in {root} (extensions: {", ".join(sorted(IMAGE_EXTENSIONS))}; '
                         'no .tar shards or HF save_to_disk dataset either)')

    names = list(by_class)
    if class_map is None and names and all(n.isdigit() for n in names) and flat_images:
        class_map = {n: int(n) for n in names}  # '<file> <int>' label files already use classifier indices
    if class_map is None:
        label_set = infer_label_set(num_classes, names, label_set)
    class_to_idx = resolve_class_to_idx(names, num_classes, label_set, class_map)
    samples = sorted(((p, class_to_idx[c]) for c, paths in by_class.items() for p in paths),
                     key=lambda s: natural_key(s[0]))
    if num_samples is not None:
        samples = samples[:num_samples]
    _logger.info('%d images in %d classes from %s (class order: %s)', len(samples), len(names), root,
                 'class map' if class_map else label_set or 'sorted folders')
    return EvalDataset(samples, class_to_idx, transform)
