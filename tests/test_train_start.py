"""train.py's start (issue 23): an existing run folder is refused unless continued or replaced, the val split is
read before epoch 0, a failed start leaves no run folder, the plan's lr is the lr used, and the offline
--pretrained error is one short line naming the flag that fixes it."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from helpers import learnable_splits, offline_caches

from regzoo.training import TrainingInputError, main

REPO = Path(__file__).resolve().parents[1]
TINY = ['--model', 'regnetx_002', '--img-size', '32', '--crop-pct', '1', '--color-jitter', '0', '--workers', '0',
        '-b', '4', '--lr', '0.05', '--epochs', '1']


def train_cli(args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / 'train.py'), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1', **env})


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    return learnable_splits(tmp_path_factory.mktemp('data'), classes=3, train=4, val=2, size=32)


def test_an_existing_run_folder_is_refused_unless_resumed_or_overwritten(data, tmp_path):
    run_dir = tmp_path / 'runs' / 'x'
    run_dir.mkdir(parents=True)
    (run_dir / 'best.safetensors').write_bytes(b'an earlier run')
    (run_dir / 'notes.txt').write_text('mine')
    common = ['--data-dir', str(data), *TINY, '--output', str(tmp_path / 'runs'), '--experiment', 'x']
    cli = train_cli(common)
    lines = cli.stderr.strip().splitlines()
    assert cli.returncode == 2 and len(lines) == 1, cli.stderr
    assert lines[0].startswith(f'train.py: error: run folder {run_dir} already holds files')
    for flag in ('--resume', '--overwrite', '--experiment'):
        assert flag in lines[0], flag
    assert (run_dir / 'best.safetensors').read_bytes() == b'an earlier run'  # untouched
    # --overwrite replaces the earlier run's files (the user's own stay); the run then continues with --resume
    assert main([*common, '--overwrite']) == 0
    assert torch.load(run_dir / 'last.state.pt', weights_only=True)['epoch'] == 1
    assert (run_dir / 'best.safetensors').read_bytes() != b'an earlier run' and (run_dir / 'notes.txt').is_file()
    assert main(['--resume', str(run_dir), '--epochs', '2']) == 0


def test_a_corrupt_val_image_is_reported_before_training_and_skipped(tmp_path, capsys):
    data = learnable_splits(tmp_path / 'data', classes=3, train=4, val=2, size=32)
    bad = data / 'val' / sorted(p.name for p in (data / 'val').iterdir())[0] / 'corrupt.png'
    bad.write_bytes(b'\x89PNG not really')
    assert main(['--data-dir', str(data), *TINY, '--output', str(tmp_path / 'runs'), '--experiment', 'r']) == 0
    out = capsys.readouterr()
    # as validate.py: a line per skipped image, before the first update
    warning = [line for line in out.err.splitlines() if line.startswith('train.py: skipped unreadable image ')]
    assert len(warning) == 1 and str(bad) in warning[0] and 'not counted in the accuracy' in warning[0], out.err
    # the accuracy is over the 6 readable images
    rows = list(csv.DictReader((tmp_path / 'runs' / 'r' / 'summary.csv').open()))
    assert len(rows) == 1 and round(float(rows[0]['top1']) * 6 / 100, 6).is_integer()


@pytest.mark.parametrize('failure', ['corrupt train image', 'bad model kwarg'])
def test_a_failed_start_leaves_no_run_folder(tmp_path, failure):
    data = learnable_splits(tmp_path / 'data', classes=3, train=4, val=2, size=32)
    extra = []
    if failure == 'corrupt train image':  # found in epoch 0, after the run's files were written
        for p in (data / 'train').rglob('*.*'):
            p.write_bytes(b'not an image')
    else:
        extra = ['--model-kwargs', 'se_ration=0.25']
    with pytest.raises(TrainingInputError):
        main(['--data-dir', str(data), *TINY, *extra, '--output', str(tmp_path / 'runs'), '--experiment', 'r'])
    assert not (tmp_path / 'runs' / 'r').exists()


def test_the_lr_used_reaches_the_planned_lr_in_a_one_epoch_run(data, tmp_path, capsys):
    """The fine-tune recipe's 1-epoch warmup in a 1-epoch run: stepped per update, the warmup ramps from 0.1 x lr
    to lr and the schedule decays from there; per epoch the whole epoch ran at the warmup lr."""
    used = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: used.append(optimizer.param_groups[0]['lr']))
    try:
        assert main(['--recipe', 'finetune', '--data-dir', str(data), *TINY, '-b', '2', '--lr', '0.05',
                     '--output', str(tmp_path), '--experiment', 'r']) == 0  # 6 updates
    finally:
        hook.remove()
    plan = capsys.readouterr().out
    assert 'lr 0.05, cosine, warmup 3 update(s) from lr 0.005 up to lr 0.05 (stepped per update)' in plan, plan
    assert len(used) == 6 and used[0] == pytest.approx(0.005)
    assert max(used) == pytest.approx(0.05) and used.index(max(used)) == 3
    assert used[:4] == sorted(used[:4]) and used[3:] == sorted(used[3:], reverse=True)


def test_resume_mid_epoch_with_a_per_update_schedule_is_exact(data, tmp_path):
    """Stopped after update 5 of epoch 0's 6 (a per-update warmup), resumed: the weights of a run never stopped."""
    from regzoo.training import engine

    common = ['--data-dir', str(data), *TINY, '-b', '2', '--warmup-epochs', '1', '--warmup-factor', '0.1',
              '--epochs', '2', '--output', str(tmp_path)]
    assert main([*common, '--experiment', 'whole']) == 0
    calls = []
    original = engine.any_process

    def stop_after_5(flag, info):
        calls.append(flag)
        return original(flag or len(calls) == 5, info)
    engine.any_process = stop_after_5
    try:
        code = main([*common, '--experiment', 'stopped'])
    finally:
        engine.any_process = original
    assert code != 0
    assert torch.load(tmp_path / 'stopped' / 'last.state.pt', weights_only=True)['step_in_epoch'] == 5
    assert main(['--resume', str(tmp_path / 'stopped')]) == 0
    from safetensors.torch import load_file
    a, b = load_file(tmp_path / 'whole' / 'last.safetensors'), load_file(tmp_path / 'stopped' / 'last.safetensors')
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_offline_pretrained_error_is_short_and_names_the_flag(data, tmp_path, monkeypatch):
    offline_caches(tmp_path, monkeypatch)
    cli = train_cli(['--data-dir', str(data), *TINY, '--model', 'regnety_032.ra_in1k', '--pretrained',
                     '--output', str(tmp_path / 'runs')], HOME=str(tmp_path))
    lines = cli.stderr.strip().splitlines()
    assert cli.returncode == 2 and len(lines) == 1, cli.stderr
    assert lines[0].startswith('train.py: error: --pretrained: ') and '--initial-checkpoint PATH' in lines[0]
    assert lines[0].count('regnety_032.ra_in1k') == 1 and len(lines[0]) < 300, lines[0]
    assert 'pretrained_cfg_overlay' not in lines[0]
    assert not (tmp_path / 'runs').exists() or not any((tmp_path / 'runs').iterdir())
