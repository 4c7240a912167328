"""validate.py end to end on a generated ImageFolder with a briefly trained checkpoint, checked image by image
against an independent evaluation built from timm (timm model, timm transform, timm folder order)."""
from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import timm.data
import torch
from helpers import class_folders, learnable_splits, randomize_bn
from PIL import Image
from safetensors.torch import load_file, save_file

import regzoo
from regzoo.data.labels import label_names
from regzoo.cli.validate import build_parser, main, validate
from regzoo.zoo.metrics import load_published
from regzoo.zoo.pretrained import WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f'class_{k}' for k in range(6)]
IMG = 32  # eval size: the learnable signal is colour, so tiny images suffice
TIMM_CFG = dict(input_size=(3, IMG, IMG), crop_pct=0.875, interpolation='bicubic')


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(val folder, checkpoint): regnetx_002 with a 6-class head, trained ~20 steps on another split."""
    base = tmp_path_factory.mktemp('validate')
    # sides of 36-60 px, so the resize and crop of the eval transform really act; several formats in one
    # folder, as real data has
    learnable_splits(base, CLASSES, train=8, val=7, size=(36, 60), seed=0, exts=('.JPEG', '.png', '.jpg'))
    train_dir, val_dir = base / 'train', base / 'val'
    transform = timm.data.create_transform(**TIMM_CFG)
    train = timm.data.ImageDataset(str(train_dir), transform=transform)
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = torch.tensor([train[i][1] for i in range(len(train))])
    torch.manual_seed(0)
    model = regzoo.create_model('regnetx_002', num_classes=len(CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(20):
        idx = torch.randint(0, len(x), (24,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # settle BN running stats on the whole split (eval uses them)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model(x)
    ckpt = base / 'regnetx_002_6cls.safetensors'
    save_file(model.state_dict(), str(ckpt))
    return val_dir, ckpt


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def _run(val_dir, ckpt, *extra):
    results, failures = validate(_args('--data-dir', str(val_dir), '--model', 'regnetx_002', '--checkpoint', str(ckpt),
                                       '--img-size', str(IMG), '-j', '0', '--log-freq', '0', *extra))
    assert not failures and len(results) == 1
    return results[0]


def _timm_reference(val_dir: Path, ckpt: Path) -> list[tuple[int, int, bool]]:
    """Independent eval: timm's model, folder order and transform, one image at a time -> (target, top1, in top5)."""
    model = timm.create_model('regnetx_002', num_classes=len(CLASSES))
    model.load_state_dict(load_file(str(ckpt)))
    model.eval()
    dataset = timm.data.ImageDataset(str(val_dir), transform=timm.data.create_transform(**TIMM_CFG))
    out = []
    with torch.no_grad():
        for i in range(len(dataset)):
            image, target = dataset[i]
            top5 = model(image[None]).topk(5, dim=1).indices[0].tolist()
            out.append((target, top5[0], target in top5))
    return out


def test_validate_matches_independent_timm_eval_to_the_image(trained):
    val_dir, ckpt = trained
    result = _run(val_dir, ckpt, '-b', '8')
    reference = _timm_reference(val_dir, ckpt)
    assert result.num_images == len(reference) == 42 and result.num_skipped == 0
    assert [(t, top[0]) for t, top in result.predictions] == [(t, p1) for t, p1, _ in reference]
    assert [t in top for t, top in result.predictions] == [in5 for _, _, in5 in reference]
    n = len(reference)
    assert result.top1 == round(100 * sum(t == p for t, p, _ in reference) / n, 3)
    assert result.top5 == round(100 * sum(in5 for _, _, in5 in reference) / n, 3)
    assert result.top1 > 80, f'the trained checkpoint should be far above chance (16.7%), got {result.top1}'
    assert result.param_count == round(sum(p.numel() for p in timm.create_model(
        'regnetx_002', num_classes=6).parameters()) / 1e6, 2)
    assert (result.img_size, result.crop_pct, result.interpolation) == (IMG, 0.875, 'bicubic')
    assert result.samples_per_sec > 0 and result.loss > 0


def test_batch_size_one_and_n_give_identical_top1(trained):
    val_dir, ckpt = trained
    one, many = _run(val_dir, ckpt, '-b', '1'), _run(val_dir, ckpt, '-b', '16')
    assert one.top1 == many.top1 and one.top5 == many.top5
    assert [top[0] for _, top in one.predictions] == [top[0] for _, top in many.predictions]


def test_bad_images_are_logged_counted_and_excluded(trained, tmp_path, caplog):
    val_dir, ckpt = trained
    data = tmp_path / 'val'
    for k in (0, 1):
        (data / f'class_{k}').mkdir(parents=True)
        for i, src in enumerate(sorted((val_dir / f'class_{k}').iterdir())[:3]):
            Image.open(src).convert('RGB').save(data / f'class_{k}' / f'{i}.jpg')
    Image.open(data / 'class_0' / '0.jpg').convert('L').save(data / 'class_0' / 'gray.png')
    Image.open(data / 'class_1' / '0.jpg').convert('CMYK').save(data / 'class_1' / 'cmyk.jpg')
    Image.open(data / 'class_1' / '1.jpg').convert('RGBA').save(data / 'class_1' / 'rgba.png')
    good = (data / 'class_0' / '1.jpg').read_bytes()
    (data / 'class_0' / 'truncated.jpg').write_bytes(good[:len(good) // 3])
    (data / 'class_1' / 'corrupt.JPEG').write_bytes(b'\xff\xd8\xff garbage')
    with caplog.at_level(logging.WARNING):
        result = _run(data, ckpt, '-b', '4', '-j', '2', '--num-classes', '6')
    assert (result.num_images, result.num_skipped) == (9, 2)
    assert sorted(Path(s.path).name for s in result.skipped) == ['corrupt.JPEG', 'truncated.jpg']
    assert sum('skipped unreadable image' in r.message for r in caplog.records) == 2


def test_cli_writes_timm_format_csv_and_json(trained, tmp_path):
    val_dir, ckpt = trained
    out_csv, out_json = tmp_path / 'r.csv', tmp_path / 'r.json'
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(ROOT / 'validate.py'), '--data-dir', str(val_dir), '--model',
                           'regnetx_002', '--checkpoint', str(ckpt), '--img-size', str(IMG), '-b', '16', '-j', '0',
                           '--results-file', str(out_csv)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0])[:9] == ['model', 'img_size', 'top1', 'top1_err', 'top5', 'top5_err', 'param_count',
                                 'crop_pct', 'interpolation']
    expected = _run(val_dir, ckpt)
    assert rows[0]['model'] == 'regnetx_002' and float(rows[0]['top1']) == expected.top1
    assert 'regnetx_002' in proc.stdout and f'{expected.top1:7.3f}' in proc.stdout
    assert main(['--data-dir', str(val_dir), '--model', 'regnetx_002', '--checkpoint', str(ckpt), '--img-size',
                 str(IMG), '-j', '0', '--results-file', str(out_json)]) == 0
    row = json.loads(out_json.read_text())
    assert row['top1'] == expected.top1 and row['top1_err'] == round(100 - expected.top1, 3)
    assert row['num_skipped'] == 0 and row['published_top1'] is None


def test_alias_names_report_under_the_registered_arch(trained, tmp_path):
    """'RegNetX-1.6GF' (a dotted paper alias) is regnetx_016: its row says so, not 'RegNetX-1' (old main did)."""
    val_dir, _ = trained
    out = tmp_path / 'r.csv'
    assert main(['--data-dir', str(val_dir), '--model', 'RegNetX-1.6GF', '--num-classes', str(len(CLASSES)),
                 '--img-size', str(IMG), '-j', '0', '--results-file', str(out)]) == 0
    assert [r['model'] for r in csv.DictReader(out.open())] == ['regnetx_016']


@pytest.mark.parametrize('argv, message', [
    (['--model', 'regnety_002'], 'does not load into'),
    (['--model', 'regnetx_002', '--num-classes', '10'], '6-class classifier'),
    (['--model', 'regnetx_002', '--class-map', 'missing.txt'], 'missing.txt does not exist'),
    (['--model', 'regnetx_02'], "unknown model 'regnetx_02'; did you mean"),
    (['--model', 'regnetx_002', '--results-file', 'r.xlsx'], '.csv or .json'),
    (['--model', 'regnetx_00*'], 'needs a single --model'),
])
def test_bad_invocations_fail_with_clear_errors(trained, argv, message, capsys):
    val_dir, ckpt = trained
    assert main(['--data-dir', str(val_dir), '--checkpoint', str(ckpt), '-j', '0', *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_or_empty_data_dir(tmp_path, capsys):
    assert main(['--data-dir', str(tmp_path / 'nope'), '--model', 'regnetx_002']) == 2
    assert 'does not exist' in capsys.readouterr().err
    (tmp_path / 'empty').mkdir()
    assert main(['--data-dir', str(tmp_path / 'empty'), '--model', 'regnetx_002', '-j', '0']) == 2
    assert 'no images found' in capsys.readouterr().err


def test_unknown_folder_for_imagenet_weights_and_pretrained_without_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    data = class_folders(tmp_path / 'val', [label_names('imagenet-1k')[0], 'tabby_cat'], n=1, size=40)
    ckpt = tmp_path / 'x002_1k.safetensors'
    save_file(regzoo.create_model('regnetx_002').state_dict(), str(ckpt))
    assert main(['--data-dir', str(data), '--model', 'regnetx_002', '--checkpoint', str(ckpt), '-j', '0']) == 2
    err = capsys.readouterr().err
    assert "'tabby_cat'" in err and 'imagenet-1k' in err
    assert main(['--data-dir', str(data), '--model', 'regnetx_002.pycls_in1k', '--pretrained', '-j', '0']) == 2
    err = capsys.readouterr().err
    # the command line's short form: the weight, why, and the flag that fixes it (issue 23)
    assert 'regnetx_002.pycls_in1k found offline' in err and '--checkpoint PATH' in err and len(err.splitlines()) == 1


def _seed_hub_cache(cache: Path, name: str, state_dict: dict) -> None:
    """The layout huggingface_hub reads offline: models--org--repo/{refs/main, snapshots/<rev>/file}."""
    repo = cache / ('models--' + WEIGHTS[name].hf_hub_id.replace('/', '--'))
    rev = '0' * 40
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(rev)
    (repo / 'snapshots' / rev).mkdir(parents=True)
    save_file(state_dict, str(repo / 'snapshots' / rev / 'model.safetensors'))


def test_pattern_validates_many_cached_weights_into_one_table(tmp_path, monkeypatch, capsys):
    names = ['regnetx_002.pycls_in1k', 'regnety_002.pycls_in1k']
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    for name in names:  # random weights stand in for the real ones: this checks the plumbing, not the accuracy
        _seed_hub_cache(tmp_path / 'hf', name, timm.create_model(name.split('.')[0]).state_dict())
    wnids = list(label_names('imagenet-1k')[:3])
    data = class_folders(tmp_path / 'val', wnids, n=1, size=40)
    out = tmp_path / 'many.csv'
    code = main(['--data-dir', str(data), '--model', 'regnet[xy]_002*', '--pretrained', '--img-size', '32', '-j', '0',
                 '--results-file', str(out)])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert [r['model'] for r in rows] == names
    published = load_published()
    for row in rows:
        ref = published[row['model']]
        assert float(row['published_top1']) == ref.top1
        assert float(row['top1_diff']) == pytest.approx(float(row['top1']) - ref.top1, abs=1e-3)
        assert row['img_size'] == '32' and row['num_images'] == '3'
    assert 'img_size 32 vs published 224' in capsys.readouterr().out


def _grey_folder(root: Path, classes: int, per_class: int) -> Path:
    """Greyscale PNGs (mode L) in ``classes`` folders: what a 1-channel model reads."""
    rng = np.random.RandomState(0)
    for k in range(classes):
        (root / f'c{k}').mkdir(parents=True)
        for i in range(per_class):
            level = 25 * k + rng.randint(0, 20, (rng.randint(30, 50), rng.randint(30, 50)))
            Image.fromarray(level.astype(np.uint8), 'L').save(root / f'c{k}' / f'{i}.png')
    return root


@pytest.mark.parametrize('fmt', ['timm', 'hf'])
def test_saved_one_channel_model_validates_as_create_model_evaluates_it(fmt, tmp_path):
    """issue 11: validate.py --checkpoint DIR builds through create_model, so a saved in_chans=1, 10-class model
    scores exactly what the model create_model(checkpoint_path=DIR) builds scores image by image in Python."""
    torch.manual_seed(0)
    saved = randomize_bn(regzoo.create_model('regnetx_002', in_chans=1, num_classes=10)).eval()
    with torch.no_grad():  # a nearest-centroid head over the classes' grey levels: predictions follow the images
        flat = ((torch.arange(10) * 25 + 10) / 255 - 0.45) / 0.225
        centroids = saved.forward_head(saved.forward_features(flat.view(10, 1, 1, 1).expand(10, 1, 224, 224)),
                                       pre_logits=True)
        saved.head.fc.weight.copy_(centroids)
        saved.head.fc.bias.copy_(-0.5 * centroids.pow(2).sum(1))
    ckpt = regzoo.save_pretrained(saved, tmp_path / 'ckpt', format=fmt)
    data = _grey_folder(tmp_path / 'val', classes=10, per_class=3)
    results, failures = validate(_args('--data-dir', str(data), '--model', 'regnetx_002', '--checkpoint', str(ckpt),
                                       '-b', '4', '-j', '0', '--log-freq', '0'))
    assert not failures and len(results) == 1
    result = results[0]

    model = regzoo.create_model('regnetx_002', checkpoint_path=str(ckpt)).eval()
    assert (model.in_chans, model.num_classes) == (1, 10)
    transform = regzoo.create_transform(regzoo.resolve_data_config(model=model))
    reference = []
    with torch.no_grad():
        for k in range(10):
            for path in sorted((data / f'c{k}').iterdir()):
                x = transform(Image.open(path))[None]
                assert x.shape[1] == 1
                torch.testing.assert_close(model(x), saved(x), rtol=0, atol=1e-5)  # the save kept the model
                reference.append((k, tuple(model(x).topk(5, dim=1).indices[0].tolist())))
    assert result.num_images == len(reference) == 30 and result.num_skipped == 0
    assert sorted(result.predictions) == sorted(reference)
    assert result.top1 == round(100 * sum(t == top[0] for t, top in reference) / len(reference), 3)
    assert result.top5 == round(100 * sum(t in top for t, top in reference) / len(reference), 3)
    assert result.top1 > 30, f'the centroid head should be far above chance (10%), got {result.top1}'


def test_published_table_agrees_with_pretrained_metadata():
    """results/published.csv and regzoo.pretrained quote the same number and source for every weight."""
    published = load_published()
    checked = 0
    for name, cfg in WEIGHTS.items():
        if cfg.top1 is None:
            continue
        ref = published[name]
        assert (ref.top1, ref.top5, ref.source) == (cfg.top1, cfg.top5, cfg.metrics_source), name
        assert ref.img_size == (cfg.test_input_size or cfg.input_size)[-1], name
        checked += 1
    assert checked >= 60


# ---------------------------------------------------------------------------------- --fast / --int8 rows

def test_fast_and_int8_rows_beside_the_fp32_row(trained, tmp_path, capsys):
    """One row per model on the same images, with the fraction of images whose top-1 matches the fp32 row's."""
    pytest.importorskip('torchao', reason="--int8 needs the [quantize] extra")
    val_dir, ckpt = trained
    out = tmp_path / 'rows.csv'
    assert main(['--data-dir', str(val_dir), '--model', 'regnetx_002', '--checkpoint', str(ckpt), '--img-size',
                 str(IMG), '-j', '0', '--log-freq', '0', '--fast', '--int8', '--calibration-dir',
                 str(val_dir.parent / 'train'), '--results-file', str(out)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [r['variant'] for r in rows] == ['fp32', 'fast', 'int8']
    fp32 = _run(val_dir, ckpt)
    assert float(rows[0]['top1']) == fp32.top1 and rows[0]['top1_agree_fp32'] == ''
    for row in rows[1:]:
        assert row['model'] == 'regnetx_002' and int(row['num_images']) == fp32.num_images
        assert abs(float(row['top1']) - fp32.top1) <= 10 and float(row['top1_agree_fp32']) >= 85, row
    assert float(rows[1]['top1_agree_fp32']) >= 95  # fp32 with BN folded: the same function
    for variant, row in zip(('fast', 'int8'), rows[1:]):
        line = next(line for line in printed.splitlines() if line.startswith(f'regnetx_002 [{variant}]'))
        assert f'{float(row["top1"]):7.3f}' in line and f'agrees with fp32 on {float(row["top1_agree_fp32"]):.2f}%' \
            in line


def test_top1_agreement_counts_images_whose_top1_matches():
    from regzoo.eval.loop import predictions_top1_agreement
    fp32 = [(0, (1, 2)), (1, (1, 0)), (2, (0, 2)), (0, (2, 1))]
    other = [(0, (1, 0)), (1, (0, 1)), (2, (0, 1)), (0, (1, 2))]
    assert predictions_top1_agreement(other, fp32) == 0.5
    with pytest.raises(ValueError):  # runs over different images are not comparable
        predictions_top1_agreement(other[:3], fp32)


@pytest.mark.parametrize('argv, message', [
    (['--int8'], '--int8 needs --calibration-dir DIR'),
    (['--int8', '--calibration-dir', 'missing'], '--calibration-dir: missing does not exist or is not a folder'),
    (['--calibration-dir', '.'], '--calibration-dir and --calibration-images need --int8'),
    (['--fast', '--amp'], 'drop --amp/--torchcompile'),
    (['--int8', '--calibration-dir', '{train}', '--device', 'meta'], '--int8 runs on the CPU'),
    (['--int8', '--calibration-dir', '{train}', '--calibration-images', '0'], '--calibration-images must be >= 1'),
])
def test_fast_and_int8_flag_errors(trained, argv, message, capsys):
    val_dir, ckpt = trained
    argv = [a.format(train=val_dir.parent / 'train') for a in argv]
    assert main(['--data-dir', str(val_dir), '--model', 'regnetx_002', '--checkpoint', str(ckpt), '-j', '0',
                 *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1, err
