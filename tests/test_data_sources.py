"""Splits beyond image folders: WebDataset shards and HF ``datasets`` folders score exactly as the ImageFolder they
were made from (shards written by webdataset's own ShardWriter, the HF folder by ``datasets``' save_to_disk, not by
regzoo); the kind detection and its one-line errors; DDP counting each image once; the shard writer's round trip;
the per-(seed, epoch) training order as a partition over ranks x workers."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import randomize_bn
from safetensors.torch import save_file

import regzoo
from regzoo.data.datasets import scan_image_folder
from regzoo.data.locate import locate_split
from regzoo.data.shard_writer import write_shards
from regzoo.data.sharding import Reader, epoch_shard_order
from regzoo.data.shards import main as shards_main
from regzoo.data.sources import open_eval_split, open_train_split
from regzoo.data.synthetic import write_image_folder
from regzoo.data.webdataset_source import ShardEvalDataset, ShardTrainDataset
from regzoo.cli.validate import build_parser, main, validate

wds = pytest.importorskip('webdataset')
datasets = pytest.importorskip('datasets')

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ['n01', 'n02', 'n10', 'cat', 'dog', 'emu', 'fox', 'gnu']  # class folders; natural sort: cat ... n10
SORTED = ['cat', 'dog', 'emu', 'fox', 'gnu', 'n01', 'n02', 'n10']
PER_CLASS = 4
N = len(CLASSES) * PER_CLASS + 1  # and one corrupt file
IMG = 32
SHARDS = 'val-{000000..000004}.tar'  # 33 samples, 7 per shard


def _folder_samples(val: Path) -> list[tuple[str, str]]:
    """(path, class folder) of every file in the val folder, the corrupt one included."""
    return [(p, c) for c, paths in scan_image_folder(val).items() for p in paths]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """An ImageFolder val split with one corrupt image, the same images as WebDataset shards (webdataset's
    ShardWriter, classes.json in another class order than the folders') and as an HF DatasetDict (save_to_disk,
    a ClassLabel in yet another order), and a checkpoint of a 8-class regnetx_002 with random BN statistics."""
    base = tmp_path_factory.mktemp('sources')
    write_image_folder(base / 'img', CLASSES, {'val': PER_CLASS, 'train': 2}, (36, 48), 0, ('.png', '.jpg', '.JPEG'))
    val = base / 'img' / 'val'
    (val / 'dog' / 'zz_corrupt.png').write_bytes(b'not an image')
    samples = _folder_samples(val)
    random.Random(0).shuffle(samples)

    shard_classes = CLASSES[::-1]  # cls indices that differ from the folder sort: the names must be followed
    (base / 'shards').mkdir()
    (base / 'shards' / 'classes.json').write_text(json.dumps({'classes': shard_classes}))
    with wds.ShardWriter(str(base / 'shards' / 'val-%06d.tar'), maxcount=7, verbose=0) as sink:
        for i, (path, cls) in enumerate(samples):
            ext = Path(path).suffix.lower().lstrip('.')
            sink.write({'__key__': f'{i:06d}', ext: Path(path).read_bytes(), 'cls': shard_classes.index(cls)})

    hf_names = sorted(CLASSES, key=lambda c: c[::-1])
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=hf_names)})
    rows = {'image': [{'bytes': Path(p).read_bytes(), 'path': None} for p, _ in samples],
            'label': [hf_names.index(c) for _, c in samples]}
    table = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({'validation': table, 'train': table.select(range(8))}).save_to_disk(str(base / 'hf'))

    torch.manual_seed(0)
    model = randomize_bn(regzoo.create_model('regnetx_002', num_classes=len(CLASSES)))
    save_file(model.state_dict(), str(base / 'model.safetensors'))
    return base


def _argv(data_dir, base: Path, *extra: str) -> list[str]:
    return ['--data-dir', str(data_dir), '--model', 'regnetx_002', '--checkpoint', str(base / 'model.safetensors'),
            '--img-size', str(IMG), '-b', '8', '-j', '0', '--log-freq', '0', *extra]


def _score(data_dir, base: Path, *extra: str):
    results, failures = validate(build_parser().parse_args(_argv(data_dir, base, *extra)))
    assert not failures and len(results) == 1
    return results[0]


def _same_scores(result, reference) -> None:
    """Exactly the same counts and, image by image (in any order), the same target and top-5."""
    assert (result.top1, result.top5, result.num_images, result.num_skipped) == \
        (reference.top1, reference.top5, reference.num_images, reference.num_skipped)
    assert sorted(result.predictions) == sorted(reference.predictions)
    assert result.loss == pytest.approx(reference.loss, abs=2e-4)


@pytest.fixture(scope='module')
def folder_result(data):
    result = _score(data / 'img' / 'val', data)
    assert (result.num_images, result.num_skipped) == (len(CLASSES) * PER_CLASS, 1)
    assert 0 < result.top5 < 100  # a score that depends on every image's class, not a trivial one
    return result


@pytest.mark.parametrize('where, workers', [(SHARDS, '0'), ('val-*.tar', '2'), ('.', '0'), ('val-000003.tar', '2')],
                         ids=['brace', 'glob-2-workers', 'folder', 'one-tar-2-workers'])
def test_shards_score_exactly_as_the_folder(data, folder_result, where, workers):
    result = _score(data / 'shards' / where if where != '.' else data / 'shards', data, '-j', workers)
    if where == 'val-000003.tar':  # one shard for two workers: each keeps its positions; the 7 samples once
        assert result.num_images + result.num_skipped == 7
        _same_scores(result, _score(data / 'shards' / where, data, '-j', '0'))
        return
    _same_scores(result, folder_result)


def test_hf_dataset_scores_exactly_as_the_folder(data, folder_result):
    _same_scores(_score(data / 'hf', data), folder_result)                           # DatasetDict: 'validation'
    _same_scores(_score(data / 'hf', data, '--split', 'validation', '-j', '2'), folder_result)  # named; 2 workers


def test_cli_over_shards_matches_the_library_on_the_folder(data, folder_result, tmp_path):
    out = tmp_path / 'rows.json'
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    run = subprocess.run([sys.executable, '-m', 'regzoo.validate', *_argv(data / 'shards' / SHARDS, data),
                          '--results-file', str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    row = json.loads(out.read_text())
    assert (row['top1'], row['top5'], row['num_images'], row['num_skipped']) == \
        (folder_result.top1, folder_result.top5, folder_result.num_images, folder_result.num_skipped)


def test_num_samples_takes_the_first_images_in_shard_order(data):
    dataset = open_eval_split(data / 'shards' / SHARDS, num_classes=8, num_samples=10)
    assert [item[2] for item in dataset] == list(range(10))


# ------------------------------------------------------------------------------------------ kind detection

def test_kinds_are_detected_from_the_path(data):
    shards = locate_split(data / 'shards' / SHARDS)
    assert shards.kind == 'shards' and [Path(s).name for s in shards.shards] == [f'val-00000{i}.tar' for i in range(5)]
    assert locate_split(data / 'shards').shards == shards.shards
    assert (locate_split(data / 'hf').kind, locate_split(data / 'hf').split) == ('hf', 'validation')
    assert locate_split(data / 'hf', 'train').split == 'train'
    assert locate_split(data / 'img').kind == 'folder' and locate_split(data / 'img').path == data / 'img' / 'val'
    assert locate_split(data / 'img', 'train').path == data / 'img' / 'train'


def test_split_folders_of_shards_and_hf_datasets(data, tmp_path):
    """ROOT/train/ and ROOT/val/ holding shards (any names) or a plain HF Dataset each are splits by name."""
    for split in ('train', 'val'):
        write_shards(data / 'img' / 'train', tmp_path / 'wds' / split, max_images=8, split=split)
        datasets.load_from_disk(str(data / 'hf'))['train'].save_to_disk(str(tmp_path / 'hf' / split))
    assert locate_split(tmp_path / 'wds').path == tmp_path / 'wds' / 'val'
    train = open_train_split(tmp_path / 'wds', 'train')
    assert train.location.shards == tuple(str(p) for p in sorted((tmp_path / 'wds' / 'train').glob('*.tar')))
    assert open_train_split(tmp_path / 'hf', 'train').num_images == 8
    assert locate_split(tmp_path / 'hf').path == tmp_path / 'hf' / 'val'


@pytest.mark.parametrize('where, extra, message', [
    ('shards/train-{000000..000003}.tar', [], r'.*shards/train-\{000000..000003\}.tar matches no file; check the '
                                              r'pattern'),
    ('shards/val-{000000..000009}.tar', [], r'5 of the 10 shards named by .* do not exist, e.g. .*val-000005.tar; '
                                            'fix the range'),
    ('empty', [], r'no images found in .*empty \(extensions: .jpeg, .jpg, .png; no .tar shards or HF '
                  r'save_to_disk dataset either\)'),
    ('hf', ['--split', 'test'], r"HF DatasetDict .*hf has no split 'test' \(splits: \['validation', 'train'\]\); "
                                'choose one with --split'),
    ('shards', ['--split', 'train'], r".*shards holds shards of split\(s\) \['val'\] but none of 'train'; name the split"),
    ('model.safetensors', [], r'--data-dir .*model.safetensors does not exist or is not a directory'),
])
def test_wrong_paths_are_one_line_errors(data, capsys, where, extra, message):
    (data / 'empty').mkdir(exist_ok=True)
    assert main(_argv(data / where, data, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('validate.py: error: ')
    assert re.match(message, err[0].removeprefix('validate.py: error: ')), err[0]


def test_a_missing_extra_names_the_pip_command(data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'webdataset', None)  # how the import system marks a module unimportable
    monkeypatch.setitem(sys.modules, 'webdataset.shardlists', None)
    assert main(_argv(data / 'shards' / SHARDS, data)) == 2
    assert capsys.readouterr().err.strip() == ("validate.py: error: reading or writing WebDataset shards needs "
                                               "webdataset; install it with: pip install 'regzoo[data]'")


# ------------------------------------------------------------------------------------------ DDP and workers

@pytest.mark.parametrize('world, workers, num_samples', [(2, 1, None), (2, 2, None), (2, 3, None), (3, 1, 20)])
def test_eval_readers_partition_the_samples(data, world, workers, num_samples):
    """Whole shards (5 shards >= readers) or positions (more readers than shards, or a first-N cut): each
    sample exactly once over every rank x worker."""
    shards = locate_split(data / 'shards').shards
    seen = Counter()
    for rank in range(world):
        dataset = ShardEvalDataset(shards, None, 8, rank=rank, world=world, num_samples=num_samples)
        for worker in range(workers):
            seen.update(s['__key__'] for _, s in dataset.reader_samples(Reader(rank, world, worker, workers)))
    expected = [f'{i:06d}' for i in range(num_samples or N)]
    assert sorted(seen) == expected and set(seen.values()) == {1}


@pytest.mark.parametrize('where', ['shards/' + SHARDS, 'img/val'], ids=['shards', 'folder'])
def test_torchrun_validation_counts_each_image_once(data, folder_result, tmp_path, where):
    """2 processes (gloo) x 2 loader workers: the summed numbers are the single process's."""
    out = tmp_path / 'rows.json'
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    run = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
         '-m', 'regzoo.validate', *_argv(data / where, data, '--results-file', str(out), '--device', 'cpu'),
         '-j', '2'], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    row = json.loads(out.read_text())
    assert (row['top1'], row['top5'], row['num_images'], row['num_skipped']) == \
        (folder_result.top1, folder_result.top5, folder_result.num_images, folder_result.num_skipped)
    assert row['loss'] == pytest.approx(folder_result.loss, abs=2e-4)
    assert run.stdout.count('regnetx_002') == 1  # one table, from rank 0


def test_ranks_of_a_folder_or_hf_split_partition_the_images(data):
    for where in (data / 'img' / 'val', data / 'hf'):
        whole = open_eval_split(where, num_classes=8, rank=0, world=1)
        parts = [open_eval_split(where, num_classes=8, rank=r, world=3) for r in range(3)]
        assert sum(len(p) for p in parts) == len(whole) == N
        assert sorted(i for p in parts for i in p.indices) == list(range(N))


# ---------------------------------------------------------------------------------------------- the writer

def _read_back(files) -> list[tuple[bytes, int, str]]:
    """(image bytes, cls, key) per sample, read by webdataset's own WebDataset."""
    samples = wds.WebDataset([str(f) for f in files], shardshuffle=False, empty_check=False)
    return [(next(s[k] for k in ('jpg', 'jpeg', 'png', 'webp') if k in s), int(s['cls']), s['__key__'])
            for s in samples]


def test_writer_round_trips_a_folder(data, tmp_path, capsys):
    src = write_image_folder(tmp_path / 'src', ['b', 'a', 'c10', 'c2'], {'train': 3, 'val': 4}, (20, 30), 1,
                             ('.png', '.jpg', '.JPEG'))
    assert shards_main([str(src), str(tmp_path / 'out'), '--shard-size', '4', '--seed', '3']) == 0
    info = json.loads((tmp_path / 'out' / 'classes.json').read_text())
    folders = {split: scan_image_folder(src / split) for split in ('train', 'val')}
    assert info['classes'] == list(folders['val']) == ['a', 'b', 'c2', 'c10']
    for split, by_class in folders.items():
        files = sorted((tmp_path / 'out').glob(f'{split}-*.tar'))
        assert [f.name for f in files] == info['shards'][split]
        expected = Counter((Path(p).read_bytes(), info['classes'].index(c)) for c, ps in by_class.items() for p in ps)
        back = _read_back(files)
        assert Counter((b, c) for b, c, _ in back) == expected   # the same bytes, each with its class
        assert info['counts'][split] == {c: len(ps) for c, ps in by_class.items()}
        assert info['num_images'][split] == len(back) == sum(expected.values())
    val_bytes = [b for b, _, _ in _read_back(sorted((tmp_path / 'out').glob('val-*.tar')))]
    assert val_bytes != [Path(p).read_bytes() for ps in folders['val'].values() for p in ps]  # shuffled
    write_shards(src / 'val', tmp_path / 'again', max_images=4, seed=3)       # the same seed: the same order
    assert [b for b, _, _ in _read_back(sorted((tmp_path / 'again').glob('val-*.tar')))] == val_bytes
    assert shards_main([str(src), str(tmp_path / 'out')]) == 2                 # never over existing shards
    assert 'already holds shards' in capsys.readouterr().err
    assert shards_main([str(data / 'img' / 'val'), str(tmp_path / 'bad')]) == 2  # an unreadable image: refused
    assert 'zz_corrupt.png' in capsys.readouterr().err and not list((tmp_path / 'bad').iterdir())


def test_writer_round_trips_an_hf_dataset(data, tmp_path):
    summary = write_shards(data / 'hf', tmp_path / 'out', max_images=3, split='train')
    table = datasets.load_from_disk(str(data / 'hf'))['train'].cast_column('image', datasets.Image(decode=False))
    names = table.features['label'].names
    info = json.loads(summary.classes_file.read_text())
    assert info['classes'] == names and len(summary.shards['train']) == 3  # 8 = 3 + 3 + 2
    back = _read_back(summary.shards['train'])
    assert Counter((b, c) for b, c, _ in back) == Counter((r['image']['bytes'], r['label']) for r in table)


# ------------------------------------------------------------------------------------- the training order

def test_epoch_order_is_seeded_and_partitions_over_ranks_and_workers(data, tmp_path):
    write_shards(data / 'img' / 'train', tmp_path / 's', max_images=2, seed=0)   # 8 shards of 2 images
    split = open_train_split(tmp_path / 's', 'train', seed=5, shuffle_buffer=4)
    dataset = split.dataset
    assert split.classes == SORTED and split.num_images == 2 * len(CLASSES)
    assert sorted(epoch_shard_order(8, 5, 0)) == list(range(8))
    assert epoch_shard_order(8, 5, 0) == epoch_shard_order(8, 5, 0) != epoch_shard_order(8, 5, 1)

    def order(epoch, world, workers):
        dataset.set_epoch(epoch)
        return {(r, w): [s['__key__'] for s in dataset.reader_samples(Reader(r, world, w, workers))]
                for r in range(world) for w in range(workers)}
    everything = sorted(f'train_{i:08d}' for i in range(2 * len(CLASSES)))
    for world, workers in [(1, 1), (2, 1), (2, 2), (3, 2)]:
        first = order(0, world, workers)
        assert sorted(k for keys in first.values() for k in keys) == everything  # each sample exactly once
        assert order(0, world, workers) == first                                 # a function of (seed, epoch)
        assert order(1, world, workers) != first                                 # another epoch, another order
    other = open_train_split(tmp_path / 's', 'train', seed=6, shuffle_buffer=4).dataset
    assert [s['__key__'] for s in other.reader_samples(Reader())] != order(0, 1, 1)[(0, 0)]


def test_training_stream_through_loader_workers(data, tmp_path):
    """Through a DataLoader with 2 workers: every sample once per epoch, with its class; reseed sees each."""
    write_shards(data / 'img' / 'train', tmp_path / 's', max_images=3, seed=0)
    seeds = []
    dataset = ShardTrainDataset(sorted(str(p) for p in (tmp_path / 's').glob('train-*.tar')),
                                lambda img: torch.tensor(img.size), seed=1, shuffle_buffer=3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        labels = torch.cat([y for _, y in loader]).tolist()
        assert Counter(labels) == Counter({k: 2 for k in range(len(CLASSES))})
    single = ShardTrainDataset(dataset.shards, seed=1, reseed=seeds.append)
    assert len(list(single)) == len(set(seeds)) == 2 * len(CLASSES)


def test_hf_training_split(data, tmp_path):
    split = open_train_split(data / 'hf', 'train')
    assert split.location.kind == 'hf' and split.num_images == 8 and split.classes == sorted(CLASSES, key=lambda c: c[::-1])
    img, label = split.dataset.load(0)
    assert img.mode == 'RGB' and 0 <= label < len(CLASSES)
    assert open_train_split(data / 'img', 'train').dataset is None  # folders: train.py's own ImageFolder path
    datasets.load_from_disk(str(data / 'hf'))['train'].save_to_disk(str(tmp_path / 'flowers'))
    with pytest.raises(ValueError, match="is not split 'train' by name"):  # one Dataset: not both splits
        open_train_split(tmp_path / 'flowers', 'train')
    with pytest.raises(ValueError, match="is not split 'train' by name"):  # val-*.tar by pattern
        open_train_split(data / 'shards' / SHARDS, 'train')
