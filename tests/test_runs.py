"""train.py runs are self-describing: train -> validate (and create_model) with the run's own settings, and the
README's fine-tune example runs as written (issue 13).

A run writes ``config.json`` (timm's hub layout: arch, classes, label names, the eval data config it validated
with) and every weights file's safetensors metadata points to it; ``validate.py --checkpoint RUN`` picks
``best.safetensors`` and reproduces the run's numbers with no size/interpolation flags.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import learnable_splits
from safetensors import safe_open
from safetensors.torch import save_file

import regzoo
from regzoo.data.transforms import DataConfig
from regzoo.utils.files import atomic_write, umask
from regzoo.cli.validate import main as validate_main
from regzoo.zoo.loading import CheckpointError, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
# plain sort (the training ImageFolder's) and natural sort (validate's folder order) disagree on these names:
# only the class names the run saved keep validate's class indices the classifier's
CLASSES = ['b1', 'b10', 'b2', 'c', 'd', 'e']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}


def run(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def summary_rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / 'summary.csv').open()))


def result_row(stdout: str, model: str = 'regnetx_002') -> dict:
    """The numbers of validate.py's summary table row for ``model``."""
    line = next(line for line in stdout.splitlines() if line.startswith(model + ' '))
    _, img, top1, top5, loss = line.split()[:5]
    return {'img': int(img), 'top1': float(top1), 'top5': float(top5), 'loss': float(loss)}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> Path:
    # images of 40-90 px per side, so the eval resize (64 px bilinear vs 224 px bicubic) changes the pixels
    return learnable_splits(tmp_path_factory.mktemp('images'), classes=CLASSES, train=8, val=6, size=(40, 90), seed=1)


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """1 epoch at 64 px with train.py's default interpolation (bilinear), through the command line."""
    out = tmp_path_factory.mktemp('runs')
    cli = run(['train.py', '--data-dir', str(data_dir), '--model', 'regnetx_002', '--img-size', '64', '--epochs', '1',
               '-b', '16', '--workers', '0', '--output', str(out), '--experiment', 'run'])
    assert cli.returncode == 0, cli.stderr[-3000:]
    return out / 'run', cli


def test_validate_run_folder_reproduces_the_runs_numbers(trained, data_dir):
    """The issue's done-when: `validate.py --checkpoint RUN_DIR` prints the run's last top-1/top-5, to the image."""
    run_dir, _ = trained
    last = summary_rows(run_dir)[-1]
    cli = run(['validate.py', '--checkpoint', str(run_dir), '--data-dir', str(data_dir / 'val'), '-j', '0'])
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert 'a train.py run folder: using best.safetensors' in cli.stderr  # says which file it took
    row = result_row(cli.stdout)
    n = len(CLASSES) * 6
    assert row['img'] == 64
    assert row['top1'] == round(float(last['top1']), 3) and row['top5'] == round(float(last['top5']), 3)
    assert round(row['top1'] * n / 100) == round(float(last['top1']) * n / 100)  # the same images right
    assert row['loss'] == round(float(last['val_loss']), 4)


def test_the_run_eval_settings_are_what_validate_used_before_and_they_matter(trained, data_dir, capsys):
    """What was wrong on old main (224 px bicubic 0.875 and the folders' natural order) gives other numbers."""
    run_dir, _ = trained
    args = ['--checkpoint', str(run_dir / 'best.safetensors'), '--data-dir', str(data_dir / 'val'), '-j', '0']
    assert validate_main(args) == 0
    own = result_row(capsys.readouterr().out)
    assert validate_main([*args, '--img-size', '224', '--interpolation', 'bicubic', '--crop-pct', '0.875']) == 0
    old_cfg = result_row(capsys.readouterr().out)
    class_map = run_dir.parent / 'natural-order.txt'  # validate's own folder order: b1, b2, b10, c, ...
    class_map.write_text('\n'.join(['b1', 'b2', 'b10', 'c', 'd', 'e']) + '\n')
    assert validate_main([*args, '--class-map', str(class_map)]) == 0
    old_order = result_row(capsys.readouterr().out)
    def metrics(row):
        return row['top1'], row['top5'], row['loss']
    # (old main, validating best.safetensors of this run, printed 33.333 for the run's own 41.667)
    assert metrics(own) != metrics(old_cfg) and metrics(own) != metrics(old_order)


def test_config_json_describes_every_weights_file(trained):
    run_dir, _ = trained
    config = json.loads((run_dir / 'config.json').read_text())
    assert config['architecture'] == 'regnetx_002' and config['num_classes'] == len(CLASSES)
    assert config['label_names'] == sorted(CLASSES)  # ImageFolder's class index order
    cfg = config['pretrained_cfg']
    assert (cfg['input_size'], cfg['crop_pct'], cfg['crop_mode'], cfg['interpolation']) == \
        ([3, 64, 64], 0.875, 'center', 'bilinear')
    # timm's keys only (timm reads the file too): the run's classes are no known label set, and it has no tag
    assert (cfg['mean'], cfg['std']) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert 'tag' not in cfg and 'label_set' not in cfg
    saved_args = yaml.safe_load((run_dir / 'args.yaml').read_text())
    for name in ('best', 'last'):
        path = run_dir / f'{name}.safetensors'
        with safe_open(str(path), 'pt') as f:
            assert f.metadata()['config'] == 'config.json'
        for checkpoint_path in (path, run_dir):
            model = regzoo.create_model('regnetx_002', checkpoint_path=checkpoint_path)
            config_back = regzoo.resolve_data_config(model=model)
            assert model.num_classes == len(CLASSES)
            assert config_back == DataConfig(input_size=(3, 64, 64), interpolation='bilinear', crop_pct=0.875)
            assert config_back.to_dict() == {k: tuple(v) if isinstance(v, list) else v
                                             for k, v in saved_args['data_config'].items()}  # what the run used
        assert read_checkpoint(path).label_names == tuple(sorted(CLASSES))
        assert model.pretrained_cfg.label_names == tuple(sorted(CLASSES))  # the model carries its classes
    # flags still override the run's settings
    model = regzoo.create_model('regnetx_002', checkpoint_path=run_dir)
    assert regzoo.resolve_data_config({'img_size': 96}, model=model).input_size == (3, 96, 96)


def test_run_prints_its_plan_and_eta_without_progress_bars_in_a_log(trained, data_dir):
    run_dir, cli = trained
    out = cli.stdout
    assert out.index('plan') < out.index('train epoch 0 update')
    for text in ('regnetx_002, 6 classes, from random init', '48 train / 36 val images in 6 classes',
                 '1 epoch(s) x 3 updates, global batch 16, lr 0.00625',
                 '64x64, crop_pct 0.875 (center), bilinear', "train.py's defaults", f'output    {run_dir}'):
        assert text in out, text
    assert re.search(r'epoch 0: train loss .*; 1/1 epochs, elapsed \d+:\d\d:\d\d, run ETA 0:00:00', out)
    assert '\r' not in out and '\r' not in cli.stderr and 'it/s' not in cli.stderr  # no tqdm bar in a log


def test_run_files_share_one_permission_mode(trained):
    run_dir, _ = trained
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.iterdir()}
    assert {'best.safetensors', 'last.safetensors', 'last.state.pt', 'config.json', 'args.yaml'} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask()}, modes


def test_atomic_write_gives_the_umask_mode_whatever_the_writer_used(tmp_path):
    old = os.umask(0o027)
    try:
        assert umask() == 0o027
        atomic_write(tmp_path / 'w.safetensors', lambda tmp: save_file({'a': torch.zeros(1)}, str(tmp)))  # 0600 itself
        atomic_write(tmp_path / 'w.txt', lambda tmp: tmp.write_text('x'))
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o640}


def test_files_of_a_run_that_are_not_weights_name_the_file_to_use(trained, data_dir):
    run_dir, _ = trained
    with pytest.raises(CheckpointError, match=r'last.state.pt is train.py\'s training state .* use .*last.safetensors'):
        read_checkpoint(run_dir / 'last.state.pt')
    with pytest.raises(CheckpointError, match=r'args.yaml describes a train.py run .* use the run folder'):
        read_checkpoint(run_dir / 'args.yaml')
    cli = run(['validate.py', '--checkpoint', str(run_dir / 'last.state.pt'), '--data-dir', str(data_dir / 'val')])
    assert cli.returncode == 2 and 'Traceback' not in cli.stderr
    assert f'use {run_dir / "last.safetensors"} or {run_dir / "best.safetensors"}' in cli.stderr


def _readme_block(marker: str) -> list[str]:
    """The commands of the README code block after the HTML comment naming ``marker`` (continuations joined)."""
    text = (REPO / 'README.md').read_text()
    start = text.index(marker)
    block = text[text.index('```bash\n', start) + len('```bash\n'):]
    block = block[:block.index('```')]
    commands = []
    for line in block.replace('\\\n', ' ').splitlines():
        line = line.split('#')[0].strip()
        if line:
            commands.append(line)
    return commands


def test_readme_finetune_example_runs_as_written(tmp_path):
    """The README's fine-tune block, run as written in a folder holding the two things it names."""
    commands = _readme_block('tests/test_runs.py runs the next block as written')
    assert [c.split()[:3] for c in commands] == [
        ['python', 'train.py', '--recipe'], ['python', 'validate.py', '--checkpoint'],
        ['python', '-m', 'regzoo.cli.predict'], ['python', '-m', 'regzoo.export']]
    learnable_splits(tmp_path / 'flowers', classes=5, train=6, val=3, size=(40, 72), seed=2)
    regzoo.save_pretrained(regzoo.create_model('regnetx_002'), tmp_path / 'my_regnetx_002', format='timm')
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == 'python'
        cli = run(argv[1:] if argv[1] == '-m' else [str(REPO / argv[1]), *argv[2:]], cwd=tmp_path)
        assert cli.returncode == 0, (command, cli.stderr[-3000:])
        outputs.append(cli.stdout)
    train_out, validate_out, predict_out, export_out = outputs
    run_dir = tmp_path / 'runs' / 'x002-flowers'
    # the starting weight's eval settings (224 px, crop 0.875, bicubic), not train.py's bilinear default
    assert "224x224, crop_pct 0.875 (center), bicubic" in train_out and "the starting weight's" in train_out
    assert 'plan (recipe finetune)' in train_out and 'global batch 16, lr 0.0025' in train_out
    last = summary_rows(run_dir)[-1]
    row = result_row(validate_out)
    assert row['img'] == 224 and row['top1'] == round(float(last['top1']), 3)
    classes = [f'class{k:02d}' for k in range(5)]
    assert json.loads((run_dir / 'config.json').read_text())['label_names'] == classes
    # predict names the run's classes; the export of the run reloads with eager parity
    predictions = json.loads(predict_out)['results']
    assert len(predictions) == 15 and all(p['predictions'][0]['label'] in classes for p in predictions)
    assert (tmp_path / 'x002-flowers.pt').is_file() and export_out.rstrip().endswith('OK')
