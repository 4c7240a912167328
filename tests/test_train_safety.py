"""train.py's checkpoints under damage (issue 16): the last two pairs are kept, a corrupt or torn ``last`` pair
resumes from the previous one, and a write that fails mid-file (a full disk) leaves every earlier file intact and
stops the run with one line."""
from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import learnable_splits

import regzoo.training.checkpoint as checkpoint
from regzoo.training import TrainingInputError, main
from regzoo.utils.files import atomic_write

REPO = Path(__file__).resolve().parents[1]
TINY = ['--model', 'regnetx_002', '--img-size', '32', '--crop-pct', '1', '--color-jitter', '0', '--workers', '0',
        '-b', '4', '--lr', '0.05']
ENOSPC = OSError(errno.ENOSPC, 'No space left on device')


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> Path:
    """A 2-epoch run: last.* is epoch 2's pair, prev.* epoch 1's."""
    tmp = tmp_path_factory.mktemp('safety')
    data = learnable_splits(tmp / 'data', classes=3, train=4, val=2, size=32)
    assert main(['--data-dir', str(data), *TINY, '--epochs', '2', '--output', str(tmp / 'runs'),
                 '--experiment', 'run']) == 0
    return tmp / 'runs' / 'run'


@pytest.fixture
def copy(run, tmp_path) -> Path:
    return Path(shutil.copytree(run, tmp_path / 'run'))


def _epoch(path: Path) -> int:
    return torch.load(path, weights_only=True)['epoch']


def test_atomic_write_removes_its_temp_file_on_failure(tmp_path):
    target = tmp_path / 'f.bin'
    target.write_bytes(b'old contents')

    def half_then_full_disk(tmp: Path):
        tmp.write_bytes(b'new cont')
        raise ENOSPC
    with pytest.raises(OSError, match='No space left on device'):
        atomic_write(target, half_then_full_disk)
    assert target.read_bytes() == b'old contents'
    assert [p.name for p in tmp_path.iterdir()] == ['f.bin']


def test_saves_keep_the_last_two_pairs(run):
    names = {p.name for p in run.iterdir()}
    assert {'last.safetensors', 'last.state.pt', 'prev.safetensors', 'prev.state.pt'} <= names
    assert not any(n.startswith(('next.', '.')) for n in names), names  # no staged pair, no temp file
    assert (_epoch(run / 'last.state.pt'), _epoch(run / 'prev.state.pt')) == (2, 1)
    for name in ('last', 'prev'):
        weights, state = checkpoint._read_pair(run, run / f'{name}.safetensors', run / f'{name}.state.pt')
        assert state['epoch'] == (2 if name == 'last' else 1)


def _flip(path: Path, at: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('damage', ['truncated state', 'flipped bit in state', 'flipped bit in weights',
                                    'torn pair'])
def test_a_bad_last_pair_resumes_from_the_previous_one(copy, damage, capsys):
    if damage == 'truncated state':
        state = copy / 'last.state.pt'
        state.write_bytes(state.read_bytes()[:len(state.read_bytes()) // 2])
        bad = 'last.state.pt is not a readable training state'
    elif damage == 'flipped bit in state':  # inside a tensor record: torch.load alone would not notice
        _flip(copy / 'last.state.pt', 0.5)
        bad = "last.state.pt is not a readable training state (corrupt: the zip record '"
    elif damage == 'flipped bit in weights':
        _flip(copy / 'last.safetensors', 0.9)
        bad = 'last.safetensors: corrupt: the tensor data of group '
    else:  # the weights of another save: both files read, but they do not belong together
        shutil.copy(copy / 'prev.safetensors', copy / 'last.safetensors')
        bad = 'last.safetensors and last.state.pt come from different saves'
    assert main(['--resume', str(copy), '--epochs', '3']) == 0
    out = capsys.readouterr()
    warning = [line for line in out.err.splitlines() if line.startswith('train.py: warning: ')]
    assert len(warning) == 1 and bad in warning[0], out.err
    assert f'resuming from the previous checkpoint {copy / "prev.state.pt"} instead (epoch 1, update' in warning[0]
    assert 'resuming at epoch 1 update 0' in out.out
    assert _epoch(copy / 'last.state.pt') == 3 and _epoch(copy / 'prev.state.pt') == 2


def test_no_good_pair_is_one_line_and_exit_2(copy):
    for name in ('last', 'prev'):
        state = copy / f'{name}.state.pt'
        state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(TrainingInputError, match='no usable checkpoint pair'):
        main(['--resume', str(copy)])
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cli = subprocess.run([sys.executable, str(REPO / 'train.py'), '--resume', str(copy)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    lines = cli.stderr.splitlines()
    assert cli.returncode == 2 and len(lines) == 1, cli.stderr
    assert lines[0].startswith(f'train.py: error: --resume {copy}: no usable checkpoint pair: ')
    assert 'last.state.pt is not a readable training state' in lines[0]
    assert 'prev.state.pt is not a readable training state' in lines[0]


@pytest.mark.parametrize('failing', [0, 1], ids=['weights', 'state'])
def test_a_full_disk_during_a_save_keeps_the_previous_files(copy, failing, monkeypatch):
    """The nth write of the save writes half its bytes, then the disk is full."""
    before = _snapshot(copy)
    calls = []

    def full_disk_at_nth(path, write):
        n = len(calls)
        calls.append(Path(path).name)
        if n != failing:
            return atomic_write(path, write)

        def half(tmp: Path):
            write(tmp)
            data = tmp.read_bytes()
            tmp.write_bytes(data[:len(data) // 2])
            raise ENOSPC
        return atomic_write(path, half)
    monkeypatch.setattr(checkpoint, 'atomic_write', full_disk_at_nth)
    with pytest.raises(TrainingInputError) as info:
        main(['--resume', str(copy), '--epochs', '3'])
    message = str(info.value)
    assert message == (f'could not save {copy / "last"}: No space left on device; '
                       'free space or choose another --output'), message
    assert calls[failing].startswith('next.')
    after = _snapshot(copy)
    # the run's files are as they were (only the run's own text files may have grown); nothing left behind
    assert set(after) == set(before), set(after) ^ set(before)
    for name in ('last.safetensors', 'last.state.pt', 'prev.safetensors', 'prev.state.pt', 'best.safetensors'):
        assert after[name] == before[name], name
    assert main(['--resume', str(copy), '--epochs', '3']) == 0  # and the run goes on once there is space
    assert _epoch(copy / 'last.state.pt') == 3
    # epoch 2 ran twice (its first save failed): the summary still has one row per epoch
    with (copy / 'summary.csv').open() as f:
        assert [row['epoch'] for row in csv.DictReader(f)] == ['0', '1', '2']


def test_a_failed_save_under_torchrun_stops_every_process(tmp_path):
    """Process 0 cannot save after epoch 0 (its staging name is taken by a folder): every process stops with an
    error line of its own. Before, process 1 went on into epoch 1 and was killed by torchrun's SIGTERM (exit -15;
    a launcher that does not tear the group down would leave it waiting in an all-reduce until the timeout)."""
    data = learnable_splits(tmp_path / 'data', classes=3, train=4, val=2, size=32)
    run_dir = tmp_path / 'runs' / 'ddp'
    (run_dir / 'next.safetensors').mkdir(parents=True)
    (run_dir / 'next.safetensors' / 'keep').write_text('a folder where train.py stages its weights file')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    cli = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(REPO / 'train.py'),
         '--data-dir', str(data), *TINY, '--epochs', '3', '--output', str(tmp_path / 'runs'), '--experiment', 'ddp',
         '--overwrite'],  # the folder holds the staging name's folder
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert cli.returncode != 0
    assert f'train.py: error: could not save {run_dir / "last"}: ' in cli.stderr, cli.stderr[-3000:]
    assert 'train.py: error: stopping: process 0 could not save its checkpoint' in cli.stderr, cli.stderr[-3000:]
    assert 'epoch 1:' not in cli.stdout  # nobody trained on
