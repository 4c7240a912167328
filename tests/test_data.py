"""regzoo.data (eval config + transform) against timm's, and regzoo.datasets (layouts, label order, bad images)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import timm
import timm.data
import torch
from helpers import NOT_IN_TIMM, class_folders
from PIL import Image

import regzoo.data.transforms as rd
from regzoo.data.datasets import (
    EvalDataset,
    SkippedImage,
    build_eval_dataset,
    collate_eval,
    load_rgb,
    read_class_map,
)
from regzoo.data.labels import label_names
from regzoo.data.synthetic import synthetic_batch, synthetic_images, write_image_folder
from regzoo.zoo.pretrained import PretrainedCfg

IMAGENET = label_names('imagenet-1k')


@pytest.fixture(scope='module')
def photo() -> Image.Image:
    """A non-square image with structure, so resize filters and crop offsets all show in the tensor."""
    rng = np.random.RandomState(0)
    arr = (rng.rand(37, 50, 3) * np.linspace(0, 255, 50)[None, :, None]).astype(np.uint8)
    return Image.fromarray(arr)


# ------------------------------------------------------------------------------------------ config + transform

TIMM_WEIGHTS = ('regnety_032.ra_in1k', 'regnetx_002.pycls_in1k', 'regnety_008_tv.tv2_in1k', 'regnety_320.seer_ft_in1k',
                'regnety_160.swag_lc_in1k')
OVERRIDES = (
    {}, {'crop_mode': 'squash'}, {'crop_mode': 'border'}, {'crop_mode': 'center', 'crop_pct': 1.0},
    {'img_size': 33, 'crop_pct': 0.9, 'interpolation': 'bilinear'}, {'input_size': (3, 40, 28), 'crop_mode': 'squash'},
    {'input_size': (3, 28, 40), 'crop_mode': 'border', 'crop_pct': 0.8}, {'input_size': (3, 30, 44)},
    {'mean': (0.5,), 'std': (0.25, 0.5, 0.75), 'interpolation': 'nearest'},
)


@pytest.mark.parametrize('weight', TIMM_WEIGHTS)
@pytest.mark.parametrize('use_test_size', [True, False])
def test_resolve_matches_timm_for_timm_cfgs(weight, use_test_size):
    cfg = timm.models.get_pretrained_cfg(weight).to_dict()
    for args in OVERRIDES:
        ours = rd.resolve_data_config(args, pretrained_cfg=cfg, use_test_size=use_test_size)
        theirs = timm.data.resolve_data_config(args, pretrained_cfg=cfg, use_test_size=use_test_size)
        assert ours.to_dict() == {k: (tuple(v) if isinstance(v, list) else v) for k, v in theirs.items()}, args


@pytest.mark.parametrize('weight', TIMM_WEIGHTS[:2])
def test_transform_tensors_equal_timm(weight, photo):
    cfg = timm.models.get_pretrained_cfg(weight).to_dict()
    for args in OVERRIDES:
        resolved = timm.data.resolve_data_config(args, pretrained_cfg=cfg, use_test_size=True)
        theirs = timm.data.create_transform(**resolved)
        ours = rd.create_transform(rd.resolve_data_config(args, pretrained_cfg=cfg))
        a, b = ours(photo), theirs(photo)
        assert a.shape == b.shape and torch.equal(a, b), args


def test_test_input_size_and_test_crop_pct_win_by_default(photo):
    cfg = PretrainedCfg('regnety_032', 'x', input_size=(3, 24, 24), test_input_size=(3, 32, 32), crop_pct=0.95,
                        test_crop_pct=1.0, interpolation='bilinear', crop_mode='squash')
    test = rd.resolve_data_config(pretrained_cfg=cfg)
    assert (test.input_size, test.crop_pct) == ((3, 32, 32), 1.0)
    assert (test.interpolation, test.crop_mode) == ('bilinear', 'squash')
    train = rd.resolve_data_config(pretrained_cfg=cfg, use_test_size=False)
    assert (train.input_size, train.crop_pct) == ((3, 24, 24), 0.95)
    as_dict = {k: getattr(cfg, k) for k in ('input_size', 'test_input_size', 'crop_pct', 'test_crop_pct',
                                            'interpolation', 'crop_mode', 'mean', 'std')}
    theirs = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=as_dict, use_test_size=True))
    assert torch.equal(rd.create_transform(test)(photo), theirs(photo))


def test_model_pretrained_cfg_is_used_and_flags_override():
    model = torch.nn.Identity()
    model.pretrained_cfg = PretrainedCfg('regnetx_002', 'x', test_input_size=(3, 48, 48), crop_pct=0.9)
    assert rd.resolve_data_config(model=model).input_size == (3, 48, 48)
    ns = argparse.Namespace(img_size=40, crop_pct=None, crop_mode='border', interpolation='', mean=None, std=None)
    cfg = rd.resolve_data_config(ns, model=model, crop_mode='squash')
    assert (cfg.input_size, cfg.crop_pct, cfg.crop_mode, cfg.interpolation) == ((3, 40, 40), 0.9, 'squash', 'bicubic')


def test_every_regzoo_weight_resolves_like_timm():
    """Where timm ships the same tag, our metadata + resolver give timm's eval config (torchvision V1 excepted)."""
    from regzoo.zoo.pretrained import WEIGHTS
    compared = 0
    for name, cfg in WEIGHTS.items():
        try:
            theirs = timm.models.get_pretrained_cfg(name)
        except Exception:  # noqa: BLE001 -- tags timm lacks (tv_in1k)
            theirs = None
        if theirs is None:
            continue
        expected = timm.data.resolve_data_config(pretrained_cfg=theirs.to_dict(), use_test_size=True)
        assert rd.resolve_data_config(pretrained_cfg=cfg).to_dict() == {
            k: tuple(v) if isinstance(v, list) else v for k, v in expected.items()}, name
        compared += 1
    # nor the weights of the archs timm lacks (the 10B SEER model)
    assert compared == len([n for n in WEIGHTS if not n.endswith('.tv_in1k') and n.split('.')[0] not in NOT_IN_TIMM])


def test_data_config_unpacks_into_timm(photo):
    cfg = rd.resolve_data_config(img_size=32, crop_mode='border')
    assert torch.equal(timm.data.create_transform(**cfg)(photo), rd.create_transform(cfg)(photo))
    assert torch.equal(rd.create_transform(cfg.to_dict())(photo), rd.create_transform(cfg)(photo))


@pytest.mark.parametrize('kwargs, message', [
    (dict(crop_mode='middle'), 'crop_mode'),
    (dict(interpolation='bicubik'), "did you mean 'bicubic'"),
    (dict(interpolation='random'), 'eval interpolation'),
    (dict(mean=(0.5, 0.5)), 'mean needs 1 or 3 values'),
    (dict(crop_pct=-0.5), 'crop_pct'),
    (dict(image_size=32), 'unknown override'),
])
def test_bad_config_raises_clear_error(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        rd.resolve_data_config(**kwargs)


# ------------------------------------------------------------------------------------------ image decoding

def test_odd_image_modes_become_proper_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, 'L').save(tmp_path / 'gray.png')
    assert np.array_equal(np.asarray(load_rgb(tmp_path / 'gray.png')), np.repeat(gray[..., None], 3, axis=2))

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 200, 30), 0  # fully transparent: colour kept, alpha dropped (as timm/PIL)
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'rgba.png')
    assert np.array_equal(np.asarray(load_rgb(tmp_path / 'rgba.png')), rgba[..., :3])

    Image.new('CMYK', (16, 16), (0, 255, 255, 0)).save(tmp_path / 'cmyk.jpg', quality=95)  # CMYK red
    red = np.asarray(load_rgb(tmp_path / 'cmyk.jpg')).astype(int)
    assert red.shape == (16, 16, 3) and (red[..., 0] > 240).all() and (red[..., 1:] < 15).all()

    wide = np.full((4, 4), 32896, np.uint16)  # 16-bit mid-gray must stay mid-gray, not clip to white
    Image.fromarray(wide).save(tmp_path / 'gray16.png')
    assert Image.open(tmp_path / 'gray16.png').mode.startswith('I')
    assert (np.asarray(load_rgb(tmp_path / 'gray16.png')) == 128).all()

    pal = Image.new('P', (4, 4))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.save(tmp_path / 'pal.png', transparency=0)
    out = np.asarray(load_rgb(tmp_path / 'pal.png'))
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[1, 1]) == (255, 0, 0)


def test_corrupt_and_truncated_files_become_skip_records(tmp_path):
    Image.new('RGB', (64, 64), (1, 2, 3)).save(tmp_path / 'ok.jpg')
    data = (tmp_path / 'ok.jpg').read_bytes()
    (tmp_path / 'truncated.jpg').write_bytes(data[:len(data) // 2])
    (tmp_path / 'garbage.jpg').write_bytes(b'not an image at all')
    samples = [(str(tmp_path / n), 0) for n in ('ok.jpg', 'truncated.jpg', 'garbage.jpg')]
    ds = EvalDataset(samples, {'a': 0}, rd.create_transform(rd.resolve_data_config(img_size=16)))
    items = [ds[i] for i in range(3)]
    assert items[0][0].shape == (3, 16, 16)
    assert isinstance(items[1], SkippedImage) and 'truncated' in items[1].reason.lower()
    assert isinstance(items[2], SkippedImage) and items[2].path.endswith('garbage.jpg')
    images, targets, indices, skipped = collate_eval(items)
    assert images.shape == (1, 3, 16, 16) and indices.tolist() == [0] and len(skipped) == 2
    assert collate_eval(items[1:])[0] is None


# ------------------------------------------------------------------------------------------ layouts + label order

def test_imagenet_folders_follow_synset_order_not_folder_sort(tmp_path):
    wnids = [IMAGENET[999], IMAGENET[0], IMAGENET[512]]
    ds = build_eval_dataset(class_folders(tmp_path, wnids), num_classes=1000)
    assert {c: ds.class_to_idx[c] for c in wnids} == {IMAGENET[999]: 999, IMAGENET[0]: 0, IMAGENET[512]: 512}
    assert sorted({t for _, t in ds.samples}) == [0, 512, 999]


def test_unknown_class_folder_for_imagenet_weights_is_an_error(tmp_path):
    class_folders(tmp_path, [IMAGENET[0], 'cats', IMAGENET[3][:-1] + 'x'])
    with pytest.raises(ValueError, match=r"not in the imagenet-1k label set: 'cats'.*did you mean") as err:
        build_eval_dataset(tmp_path, num_classes=1000)
    assert 'wnid' in str(err.value)
    with pytest.raises(ValueError, match='cats'):
        build_eval_dataset(tmp_path, num_classes=10, label_set='imagenet-1k')


def test_plain_folders_use_timms_order(tmp_path):
    class_folders(tmp_path, ['class10', 'class2', 'b', 'a1'], n=3, ext='.png')
    ds = build_eval_dataset(tmp_path, num_classes=4)
    theirs = timm.data.create_dataset('', root=str(tmp_path))
    assert ds.class_to_idx == theirs.reader.class_to_idx
    assert [(p, t) for p, t in ds.samples] == [(p, t) for p, t in theirs.reader.samples]


def test_class_map_overrides_and_is_checked(tmp_path):
    class_folders(tmp_path / 'data', ['dog', 'cat'])
    (tmp_path / 'map.txt').write_text('dog\ncat\n')
    ds = build_eval_dataset(tmp_path / 'data', num_classes=2, class_map=read_class_map(tmp_path / 'map.txt'))
    assert ds.class_to_idx == {'dog': 0, 'cat': 1}
    (tmp_path / 'map.json').write_text('{"dog": 5, "cat": 1}')
    with pytest.raises(ValueError, match="outside the model's 2 classes"):
        build_eval_dataset(tmp_path / 'data', num_classes=2, class_map=read_class_map(tmp_path / 'map.json'))
    (tmp_path / 'short.txt').write_text('dog\n')
    with pytest.raises(ValueError, match="not in the class map: 'cat'"):
        build_eval_dataset(tmp_path / 'data', num_classes=2, class_map=read_class_map(tmp_path / 'short.txt'))


def _flat(root, n=4):
    root.mkdir()
    for i in range(1, n + 1):
        Image.new('RGB', (8, 8)).save(root / f'ILSVRC2012_val_{i:08d}.JPEG')
    return root


def test_flat_val_layout_with_each_label_file_format(tmp_path):
    val = _flat(tmp_path / 'val_flat')
    truth = [IMAGENET[5], IMAGENET[0], IMAGENET[5], IMAGENET[42]]
    kaggle = 'ImageId,PredictionString\n' + ''.join(
        f'ILSVRC2012_val_{i:08d},{truth[i - 1]} 1 2 3 4 {truth[i - 1]} 5 6 7 8\n' for i in (3, 1, 4, 2))
    pairs = ''.join(f'ILSVRC2012_val_{i + 1:08d}.JPEG {w}\n' for i, w in enumerate(truth))
    ints = ''.join(f'ILSVRC2012_val_{i + 1:08d}.JPEG {IMAGENET.index(w)}\n' for i, w in enumerate(truth))
    for name, text in (('LOC_val_solution.csv', kaggle), ('pairs.txt', pairs), ('ints.txt', ints),
                       ('one_per_line.txt', '\n'.join(truth))):
        (tmp_path / name).write_text(text)
        ds = build_eval_dataset(val, num_classes=1000, label_file=tmp_path / name)
        assert [t for _, t in ds.samples] == [5, 0, 5, 42], name
    (tmp_path / 'devkit.txt').write_text('490\n361\n171\n822\n')
    with pytest.raises(ValueError, match='meta.mat'):
        build_eval_dataset(val, num_classes=1000, label_file=tmp_path / 'devkit.txt')
    (tmp_path / 'partial.txt').write_text(pairs.splitlines()[0])
    with pytest.raises(ValueError, match='3 image'):
        build_eval_dataset(val, num_classes=1000, label_file=tmp_path / 'partial.txt')
    with pytest.raises(ValueError, match='--label-file'):
        build_eval_dataset(val, num_classes=1000)


def test_missing_empty_and_mixed_dirs_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        build_eval_dataset(tmp_path / 'nope', num_classes=2)
    (tmp_path / 'empty' / 'a').mkdir(parents=True)
    with pytest.raises(ValueError, match='no images found'):
        build_eval_dataset(tmp_path / 'empty', num_classes=2)
    mixed = class_folders(tmp_path / 'mixed', ['a'])
    Image.new('RGB', (8, 8)).save(mixed / 'loose.jpg')
    with pytest.raises(ValueError, match='mixes image files and class folders'):
        build_eval_dataset(mixed, num_classes=2)


def test_imagenet_root_uses_val_split_and_num_samples(tmp_path):
    class_folders(tmp_path / 'train', [IMAGENET[1]])
    class_folders(tmp_path / 'val', [IMAGENET[7], IMAGENET[3]], n=3)
    ds = build_eval_dataset(tmp_path, num_classes=1000, num_samples=4)
    assert len(ds) == 4 and all('/val/' in p for p, _ in ds.samples)
    assert [t for _, t in ds.samples] == [3, 3, 3, 7]


# ------------------------------------------------------------------------------------------ synthetic images

def test_synthetic_images_are_seeded_and_the_batch_is_their_normalised_form():
    images, labels = synthetic_images(6, size=24, num_classes=4, seed=3)
    again, same_labels = synthetic_images(6, size=24, num_classes=4, seed=3)
    assert labels == same_labels and all(0 <= k < 4 for k in labels)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    assert not np.array_equal(np.asarray(images[0]), np.asarray(synthetic_images(6, 24, 4, seed=4)[0][0]))
    assert all(img.mode == 'RGB' and img.size == (24, 24) for img in images)
    x, y = synthetic_batch(6, size=24, num_classes=4, seed=3)
    assert x.shape == (6, 3, 24, 24) and x.dtype == torch.float32 and y.tolist() == labels
    mean, std = torch.tensor(rd.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(rd.IMAGENET_STD).view(3, 1, 1)
    pixels = torch.from_numpy(np.array(images[0])).permute(2, 0, 1) / 255
    assert (x[0] * std + mean - pixels).abs().max() <= 1 / 255  # the same image, before 8-bit rounding


def test_synthetic_classes_are_separable_by_colour_alone():
    """What a probe or a short training run relies on: a nearest-mean-colour rule already classifies them."""
    x, y = synthetic_batch(200, size=16, num_classes=10, seed=0)
    colour = x.mean((2, 3))
    centroids = torch.stack([colour[y == k].mean(0) for k in range(10)])
    test_x, test_y = synthetic_batch(100, size=16, num_classes=10, seed=1)
    pred = torch.cdist(test_x.mean((2, 3)), centroids).argmin(1)
    assert (pred == test_y).float().mean() >= 0.95


def test_write_image_folder_layout(tmp_path):
    root = write_image_folder(tmp_path / 'ds', ['cat', 'dog'], {'train': 4, 'val': 2}, size=(20, 30),
                              exts=('.png', '.jpg'))
    assert sorted(str(p.relative_to(root)) for p in root.rglob('*.*')) == [
        'train/cat/000.png', 'train/cat/001.jpg', 'train/cat/002.png', 'train/cat/003.jpg',
        'train/dog/000.png', 'train/dog/001.jpg', 'train/dog/002.png', 'train/dog/003.jpg',
        'val/cat/000.png', 'val/cat/001.jpg', 'val/dog/000.png', 'val/dog/001.jpg']
    sizes = {Image.open(p).size for p in root.rglob('*.*')}
    assert all(20 <= s <= 30 for size in sizes for s in size) and len(sizes) > 1
    flat = write_image_folder(tmp_path / 'flat', 3, per_class=1, size=8)
    assert sorted(p.name for p in flat.iterdir()) == ['class00', 'class01', 'class02']
    ds = build_eval_dataset(flat, num_classes=3)
    assert [t for _, t in ds.samples] == [0, 1, 2]
