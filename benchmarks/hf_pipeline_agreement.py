#!/usr/bin/env python3
"""transformers' ``pipeline('image-classification')`` on a regzoo HF folder vs ``regzoo.predict``: top-1 agreement,
and how far HF's ``ConvNextImageProcessor`` is from regzoo's eval transform for eval settings it can and cannot say.

1. Agreement. ``--folder``: a folder written by ``regzoo.save_pretrained(model, DIR, format='hf')``. Without it,
   a "trained-ish" model is made: ``--arch`` with randomized BN statistics and a classifier fitted to the class
   folders of ``--train`` (the nearest class mean of its pooled features: no gradient training), with those
   folder names as class names, saved in HF's layout. Then both classify the ``--images`` (an ImageFolder
   ``CLASS/IMG`` tree or a flat folder; the first ``--limit``, spread over the classes) and the share of equal
   top-1 labels is reported (and each one's accuracy when the folders are classes).
2. Processor vs regzoo. For each eval setting in ``SETTINGS`` (the default, a 288 px full crop, bilinear, and the
   settings the processor cannot say: 384 px with a crop, squash, a non-square input), the processor written for
   it and regzoo's transform preprocess the same images: max and mean |difference| in 0-255 grey levels, and the
   top-1 agreement of the model on the two (a shape mismatch has no pixel difference); on the first
   ``--measure-limit`` images, then on generated ones of varied sizes and aspect ratios (where the crop's
   centring and the warp show: CIFAR's photos are all 32 x 32).

    tar xzf cifar10-12k.tar.gz -C /tmp/cifar    # train/CLASS/*.jpg, val/CLASS/*.jpg (32 x 32 photos)
    python benchmarks/hf_pipeline_agreement.py --train /tmp/cifar/train --images /tmp/cifar/val --limit 500
    python benchmarks/hf_pipeline_agreement.py --folder saved_hf --images photos/ --json out.json

Not a speed benchmark: any machine gives the same figures.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

import regzoo
from regzoo.data.synthetic import synthetic_images
from regzoo.eval.predict import find_images
from regzoo.models.layers import randomize_bn
from regzoo.zoo.hf_processor import inexact

# (name, pretrained_cfg_overlay): the eval settings part 2 compares
SETTINGS = [
    ('224 crop 0.875 bicubic (default)', dict()),
    ('288 crop 1.0 bicubic', dict(input_size=(3, 288, 288), crop_pct=1.0)),
    ('224 crop 0.9 bilinear', dict(crop_pct=0.9, interpolation='bilinear')),
    ('384 crop 1.0 center', dict(input_size=(3, 384, 384), crop_pct=1.0)),
    ('384 crop 0.95 center', dict(input_size=(3, 384, 384), crop_pct=0.95)),
    ('224 squash 0.875', dict(crop_mode='squash')),
    ('224x288 (non-square)', dict(input_size=(3, 224, 288))),
]


def load_images(folder: Path, limit: int) -> tuple[list[Image.Image], list[str | None]]:
    """Up to ``limit`` RGB images of ``folder`` (round-robin over its class folders) and their class names."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if classes:
        per_class = [[(p, c.name) for p in find_images([str(c)])] for c in classes]
        picked = [item for group in zip(*per_class) for item in group][:limit]  # round-robin
    else:
        picked = [(p, None) for p in find_images([str(folder)])][:limit]
    return [Image.open(p).convert('RGB') for p, _ in picked], [label for _, label in picked]


def fitted_model(arch: str, train: Path, per_class: int) -> regzoo.RegNet:
    """``arch`` with random BN statistics and a nearest-class-mean classifier for ``train``'s class folders."""
    images, labels = load_images(train, per_class * len([p for p in train.iterdir() if p.is_dir()]))
    names = sorted(set(labels))
    torch.manual_seed(0)
    model = randomize_bn(regzoo.create_model(arch, num_classes=len(names),
                                             pretrained_cfg_overlay=dict(label_names=names))).eval()
    transform = regzoo.create_transform(regzoo.resolve_data_config(model=model))
    with torch.no_grad():
        feats = torch.cat([model.forward_head(model.forward_features(torch.stack([transform(i) for i in chunk])),
                                              pre_logits=True) for chunk in _chunks(images, 64)])
        center, index = feats.mean(0), torch.tensor([names.index(label) for label in labels])
        means = torch.stack([(feats - center)[index == k].mean(0) for k in range(len(names))])
        scale = 10 / means.norm(dim=1).max()
        model.head.fc.weight.copy_(means * scale)
        model.head.fc.bias.copy_(-(means * scale) @ center - 0.5 * scale * means.pow(2).sum(1))
    return model


def _chunks(items, n):
    return [items[i:i + n] for i in range(0, len(items), n)]


def agreement(folder: Path, images, labels) -> dict:
    import transformers
    model = regzoo.create_model(_arch(folder), checkpoint_path=folder).eval()  # regzoo's reload of the folder
    ours = [p[0].label for p in regzoo.predict(model, images, topk=1)]
    pipe = transformers.pipeline('image-classification', model=str(folder))
    theirs = [r[0]['label'] for r in pipe(images, top_k=1, batch_size=32)]
    out = dict(images=len(images), agreement=sum(a == b for a, b in zip(ours, theirs)) / len(images),
               distinct_predictions=len(set(ours)), most_common=collections.Counter(ours).most_common(3))
    if all(labels):
        out.update(regzoo_top1=sum(a == b for a, b in zip(ours, labels)) / len(images),
                   pipeline_top1=sum(a == b for a, b in zip(theirs, labels)) / len(images))
    return out


def _arch(folder: Path) -> str:
    """The registered arch whose stages an HF folder's config.json describes."""
    from regzoo.zoo.convert import hf
    from regzoo.zoo.hub_names import matching_arch
    arch = matching_arch(hf.regnet_cfg(json.loads((folder / 'config.json').read_text())))
    if arch is None:
        sys.exit(f'{folder}: its config.json matches no registered architecture')
    return arch


def processor_vs_regzoo(model: regzoo.RegNet, images) -> list[dict]:
    import transformers
    rows = []
    for name, overlay in SETTINGS:
        model.pretrained_cfg = model.default_cfg = model.pretrained_cfg.replace(
            test_input_size=None, test_crop_pct=None, **{'input_size': (3, 224, 224), 'crop_pct': 0.875,
                                                         'crop_mode': 'center', 'interpolation': 'bicubic',
                                                         **overlay})
        with tempfile.TemporaryDirectory() as tmp:
            regzoo.save_pretrained(model, tmp, format='hf', card=False)
            processor = transformers.AutoImageProcessor.from_pretrained(tmp)
        transform = regzoo.create_transform(regzoo.resolve_data_config(model=model))
        std = torch.tensor(model.pretrained_cfg.std).view(3, 1, 1)
        largest, total, same = 0.0, 0.0, 0
        for chunk in _chunks(images, 32):
            theirs = processor(chunk, return_tensors='pt')['pixel_values']
            ours = torch.stack([transform(i) for i in chunk])
            if theirs.shape == ours.shape:
                diff = ((theirs - ours) * std * 255).abs()
                largest = max(largest, diff.max().item())
                total += diff.mean(dim=(1, 2, 3)).sum().item()
            else:
                largest = total = float('nan')
            with torch.no_grad():
                same += (model(theirs).argmax(1) == model(ours).argmax(1)).sum().item()
        rows.append(dict(setting=name, inexact='; '.join(inexact(model.pretrained_cfg)) or '-',
                         max_diff=largest, mean_diff=total / len(images), top1_agreement=same / len(images)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=Path, help='an ImageFolder tree or a folder of images '
                        '(default: 300 generated images of varied sizes and aspect ratios)')
    parser.add_argument('--folder', type=Path, help='a regzoo HF folder (default: make one, see --train)')
    parser.add_argument('--train', type=Path, help='class folders to fit the made model\'s classifier to '
                        '(default: --images)')
    parser.add_argument('--arch', default='regnetx_002')
    parser.add_argument('--fit-per-class', type=int, default=100)
    parser.add_argument('--limit', type=int, default=500, help='images for the agreement (part 1)')
    parser.add_argument('--measure-limit', type=int, default=200, help='of those, images for part 2 (0: skip it)')
    parser.add_argument('--json', type=Path, help='also write the results here')
    args = parser.parse_args(argv)
    if args.images is not None:
        images, labels = load_images(args.images, args.limit)
    else:
        images, labels = synthetic_images(300, size=(100, 400), num_classes=10, seed=0)[0], [None] * 300
    if not images:
        parser.error(f'--images {args.images}: no images found')
    with tempfile.TemporaryDirectory() as tmp:
        if args.folder is None:
            train = args.train or args.images
            if train is None:
                parser.error('give --folder, or --train (class folders) to make a model')
            model = fitted_model(args.arch, train, args.fit_per_class)
            folder = regzoo.save_pretrained(model, Path(tmp) / 'hf', format='hf', card=False)
            made = f'{args.arch}, random conv weights, randomized BN, nearest-class-mean head fitted to {train}'
        else:
            folder, made = args.folder, f'{args.folder}'
            model = regzoo.create_model(_arch(folder), checkpoint_path=folder).eval()
        result = dict(model=made, pipeline_vs_predict=agreement(folder, images, labels), processor_vs_regzoo={})
        if args.measure_limit > 0:
            generated = synthetic_images(args.measure_limit, size=(100, 400), num_classes=10, seed=1)[0]
            result['processor_vs_regzoo'] = {
                'the images': processor_vs_regzoo(model, images[:args.measure_limit]),
                'generated, varied sizes': processor_vs_regzoo(model, generated)}
    a = result['pipeline_vs_predict']
    print(f'model: {made}')
    print(f'pipeline vs regzoo.predict on {a["images"]} images: top-1 label agreement {a["agreement"]:.2%} '
          f'({a["distinct_predictions"]} distinct predictions; most common {a["most_common"]})'
          + (f'; top-1 accuracy regzoo {a["regzoo_top1"]:.2%}, pipeline {a["pipeline_top1"]:.2%}'
             if 'regzoo_top1' in a else ''))
    for which, rows in result['processor_vs_regzoo'].items():
        print(f'\nprocessor vs regzoo transform, {which} (|Δ| in 0-255 grey levels):')
        print(f'{"eval setting":34} {"max |Δ|":>8} {"mean |Δ|":>9} {"top-1 agree":>11}  what the processor cannot say')
        for row in rows:
            print(f'{row["setting"]:34} {row["max_diff"]:8.1f} {row["mean_diff"]:9.3f} {row["top1_agreement"]:11.2%}  '
                  f'{row["inexact"]}')
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
