"""train.py over WebDataset shards and HF datasets: a run completes from either (train and val), validate.py on the
run gives the run's own val numbers, each training sample is read once per epoch over ranks and loader workers,
and a sharded run resumes at an epoch boundary. The shards are written by webdataset's own ShardWriter and the HF
folder by ``datasets``' save_to_disk, from a generated image folder (not by regzoo's writer)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import learnable_splits, train_stopped_by_sigterm

from regzoo.cli.validate import main as validate_main
from regzoo.data.datasets import scan_image_folder
from regzoo.training import TrainingInputError, main
from regzoo.training.args import parse_args, resolve_args
from regzoo.training.config import RunConfig
from regzoo.training.distributed import DistInfo
from regzoo.training.splits import count_shard_samples, load_splits, stream_loader

wds = pytest.importorskip('webdataset')
datasets = pytest.importorskip('datasets')

REPO = Path(__file__).resolve().parents[1]
CLASSES = ['b1', 'b10', 'b2', 'c', 'd', 'e']
TRAIN, VAL = 8, 4
TINY = ['--model', 'regnetx_002', '--img-size', '32', '--crop-pct', '1', '--color-jitter', '0', '--workers', '0',
        '--log-interval', '1', '-b', '8', '--lr', '0.1']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    """``img/{train,val}/<class>/`` and the same images as shards (``shards/{train,val}-%06d.tar`` + classes.json
    with the class names in another order than the folders') and as an HF DatasetDict (a ClassLabel)."""
    base = tmp_path_factory.mktemp('train-sources')
    learnable_splits(base / 'img', classes=CLASSES, train=TRAIN, val=VAL, size=32, seed=0)
    shard_classes = CLASSES[::-1]
    (base / 'shards').mkdir()
    (base / 'shards' / 'classes.json').write_text(json.dumps({'classes': shard_classes}))
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=CLASSES)})
    tables = {}
    for split, per_shard in (('train', 12), ('val', 8)):
        samples = [(p, c) for c, paths in sorted(scan_image_folder(base / 'img' / split).items()) for p in paths]
        with wds.ShardWriter(str(base / 'shards' / f'{split}-%06d.tar'), maxcount=per_shard, verbose=0) as sink:
            for i, (path, cls) in enumerate(samples):
                sink.write({'__key__': f'{split}{i:05d}', 'png': Path(path).read_bytes(),
                            'cls': shard_classes.index(cls)})
        tables[split] = datasets.Dataset.from_dict(
            {'image': [{'bytes': Path(p).read_bytes(), 'path': None} for p, _ in samples],
             'label': [CLASSES.index(c) for _, c in samples]}, features=features)
    datasets.DatasetDict(tables).save_to_disk(str(base / 'hf'))
    return base


def _rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / 'summary.csv').open()))


def _validate_row(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert validate_main([*argv, '-j', '0', '--log-freq', '0']) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith('regnetx_002 '))
    _, img, top1, top5, loss = line.split()[:5]
    return {'img': int(img), 'top1': float(top1), 'top5': float(top5), 'loss': float(loss)}


@pytest.mark.parametrize('kind', ['shards', 'hf'])
def test_one_epoch_from_shards_or_hf_and_validate_gives_the_runs_numbers(data, tmp_path, capsys, kind):
    assert main(['--data-dir', str(data / kind), *TINY, '--epochs', '1', '--output', str(tmp_path),
                 '--experiment', 'run']) == 0
    out = capsys.readouterr().out
    assert f'{len(CLASSES) * TRAIN} train' in out and '6 updates/epoch' in out
    rows = _rows(tmp_path / 'run')
    assert [r['epoch'] for r in rows] == ['0'] and float(rows[0]['train_loss']) > 0
    row = _validate_row(capsys, '--checkpoint', str(tmp_path / 'run'), '--data-dir', str(data / kind),
                        '--split', 'val')
    assert row['img'] == 32  # the eval size
    assert row['top1'] == round(float(rows[0]['top1']), 3) and row['top5'] == round(float(rows[0]['top5']), 3)
    assert row['loss'] == round(float(rows[0]['val_loss']), 4)
    # and the same weights score the same on the folder the data was made from
    assert _validate_row(capsys, '--checkpoint', str(tmp_path / 'run'), '--data-dir', str(data / 'img' / 'val')) == row


def test_shard_samples_are_counted_from_the_tar_headers(data):
    shards = sorted(str(p) for p in (data / 'shards').glob('train-*.tar'))
    assert len(shards) == 4 and count_shard_samples(shards) == len(CLASSES) * TRAIN


@pytest.mark.parametrize('world,workers', [(1, 2), (2, 2), (2, 0)])
def test_each_training_sample_once_per_epoch_over_ranks_and_workers(data, world, workers):
    """The training loaders of all ranks together yield each class as often as the folder holds it, per epoch.

    Batch 4 divides every reader's share (12-sample shards): a DataLoader drops each worker's incomplete last batch
    (drop_last acts per worker on a stream), so otherwise up to batch - 1 samples per worker sit out an epoch."""
    seen = Counter()
    for rank in range(world):
        args = resolve_args(parse_args(['--data-dir', str(data / 'shards'), *TINY, '-b', '4', '--workers', str(workers)]),
                            world)
        splits = load_splits(args, rank, world)
        cfg = RunConfig.create(args, num_classes=splits.num_classes, train_size=(32, 32),
                               data_config={'input_size': (3, 32, 32), 'interpolation': 'bilinear',
                                            'mean': (0.5,) * 3, 'std': (0.5,) * 3, 'crop_pct': 1.0})
        loader, epochs = stream_loader(splits, cfg, DistInfo(rank, rank, world, None))
        assert epochs.updates_per_epoch == len(CLASSES) * TRAIN // (4 * world)
        epochs.set_epoch(3)
        seen.update(label for _, y in loader for label in y.tolist())
    names = splits.classes  # classes.json's order: cls 0 is 'e'
    assert {names[k]: v for k, v in seen.items()} == {c: TRAIN for c in CLASSES}


@pytest.mark.parametrize('kind,world', [('shards', 1), ('shards', 2), ('hf', 1), ('hf', 2)])
def test_the_budget_counts_every_val_batch_of_shards_and_hf(data, kind, world):
    """--time-budget predicts a validation from its batch count: one that yields fewer batches than it counts
    (a shard stream has no length) would leave validations out of the prediction."""
    from regzoo.training.setup import _val_batches
    from regzoo.training.splits import eval_split_loader

    counted = 0
    shard_batches = 8 // 4  # a rank reads whole shards (8 images each): it may read one more than an even share
    for rank in range(world):
        args = resolve_args(parse_args(['--data-dir', str(data / kind), *TINY, '-b', '4']), world)
        splits = load_splits(args, rank, world)
        cfg = RunConfig.create(args, num_classes=splits.num_classes, train_size=(32, 32),
                               data_config={'input_size': (3, 32, 32), 'interpolation': 'bilinear',
                                            'mean': (0.5,) * 3, 'std': (0.5,) * 3, 'crop_pct': 1.0,
                                            'crop_mode': 'center'})
        info = DistInfo(rank, rank, world, None)
        evaluation = eval_split_loader(splits, cfg, info)
        yielded = sum(1 for _ in evaluation)
        if kind == 'hf':
            assert _val_batches(evaluation, splits, cfg, info) == yielded
        else:
            assert abs(_val_batches(evaluation, splits, cfg, info) - yielded) <= shard_batches
        counted += _val_batches(evaluation, splits, cfg, info)
    assert counted * 4 >= len(CLASSES) * VAL  # 24 val images, batch 4: at least 6 batches over the ranks


def test_torchrun_two_processes_over_shards(data, tmp_path):
    cli = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
         str(REPO / 'train.py'), '--data-dir', str(data / 'shards'), *TINY, '--epochs', '1', '--output',
         str(tmp_path), '--experiment', 'ddp'], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert '2 process(es) x batch 8 x 1 accumulation = global batch 16' in cli.stdout and '3 updates/epoch' in cli.stdout
    rows = _rows(tmp_path / 'ddp')
    assert [r['epoch'] for r in rows] == ['0']
    # validation over 2 ranks counted each val image once: its top-1 is a whole number of the 24 images
    assert abs(float(rows[0]['top1']) * len(CLASSES) * VAL / 100 - round(float(rows[0]['top1']) * 24 / 100)) < 1e-6


def test_a_sharded_run_resumes_at_an_epoch_boundary(data, tmp_path):
    """Stopped mid-epoch 1, resumed: epoch 1 restarts at its start (said so), and the run ends with both rows;
    epoch 0 (before the stop) is the uninterrupted run's."""
    common = ['--data-dir', str(data / 'shards'), *TINY, '--epochs', '2', '--output', str(tmp_path)]
    whole = subprocess.run([sys.executable, str(REPO / 'train.py'), *common, '--experiment', 'whole'], cwd=REPO,
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    train_stopped_by_sigterm([*common, '--experiment', 'killed'], 'train epoch 1 update 2/', ENV)
    resumed = subprocess.run([sys.executable, str(REPO / 'train.py'), '--resume', str(tmp_path / 'killed')],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'epoch 1 restarts at its start' in resumed.stdout
    assert 'train epoch 1 update 1/6' in resumed.stdout  # from the epoch's first update again
    rows_whole, rows_killed = _rows(tmp_path / 'whole'), _rows(tmp_path / 'killed')
    assert [r['epoch'] for r in rows_killed] == ['0', '1']
    assert rows_killed[0] == {**rows_whole[0], 'images_per_sec': rows_killed[0]['images_per_sec']}


def test_bad_data_is_one_line(data, tmp_path):
    with pytest.raises(TrainingInputError, match=r'has no class names .*pass --num-classes'):
        (tmp_path / 'plain').mkdir()
        for p in (data / 'shards').glob('*.tar'):
            (tmp_path / 'plain' / p.name).symlink_to(p)
        main(['--data-dir', str(tmp_path / 'plain'), *TINY, '--epochs', '1', '--output', str(tmp_path)])
    with pytest.raises(TrainingInputError, match=r"split .*nope not found; .* holds"):
        main(['--data-dir', str(data / 'img'), '--train-split', 'nope', *TINY])
    with pytest.raises(TrainingInputError, match=r"--data-dir: .*no split 'nope'"):
        main(['--data-dir', str(data / 'hf'), '--val-split', 'nope', *TINY])
