"""Issue 24: progressive resizing (--train-sizes), the eval size above the train size (--test-img-size),
--time-budget's epoch fitting, and the budget-aware ``fast`` recipe."""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import signal
from pathlib import Path

import pytest
import torch
import yaml
from helpers import learnable_splits
from safetensors.torch import load_file

import regzoo
from regzoo.training import TrainingInputError, load_recipe, main, parse_args, resolve_args
from regzoo.training import budget
from regzoo.training.components import epoch_updates, lr_schedule
from regzoo.training.sizes import SizeStep, describe, epoch_sizes, parse_size_step, size_steps

TINY = ['--model', 'regnetx_002', '--img-size', '32', '--crop-pct', '1', '--color-jitter', '0', '--workers', '0',
        '--log-interval', '1', '-b', '16', '--lr', '0.1']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> Path:
    return learnable_splits(tmp_path_factory.mktemp('images'), classes=4, train=16, val=4, size=32, seed=0)


# ---------------------------------------------------------------- the size schedule (pure)

def test_sizes_without_epochs_split_the_run_into_equal_parts_and_stretch_with_it():
    steps = size_steps(['0.75', '0.875', '1.0'])
    assert steps == (SizeStep(fraction=0.75), SizeStep(fraction=0.875), SizeStep(fraction=1.0))
    assert epoch_sizes(steps, 64, 6) == (48, 48, 56, 56, 64, 64)
    assert epoch_sizes(steps, 64, 7) == (48, 48, 56, 56, 64, 64, 64)  # part i from epoch floor(i * 7 / 3)
    assert epoch_sizes(steps, 64, 12).count(48) == 4 and epoch_sizes(steps, 64, 12)[-1] == 64
    assert epoch_sizes(steps, 64, 2) == (56, 64)  # fewer epochs than sizes: the later sizes, the last always
    assert epoch_sizes(steps, 224, 3) == (168, 196, 224)
    assert epoch_sizes(steps, 30, 3) == (24, 28, 32)  # fractions round to a multiple of 4
    assert epoch_sizes(None, 64, 3) == (64, 64, 64)
    assert describe((48, 48, 56, 64, 64)) == '48 (epochs 0-1), 56 (epoch 2), 64 (epochs 3-4)'


def test_sizes_with_start_epochs_and_yaml_numbers():
    steps = size_steps(['96@0', '128@2', '160@5'])
    assert epoch_sizes(steps, 224, 7) == (96, 96, 128, 128, 128, 160, 160)
    assert size_steps([0.5, 1.0, 64]) == (SizeStep(fraction=0.5), SizeStep(fraction=1.0), SizeStep(pixels=64))
    with pytest.raises(ValueError, match='start.* at or after the last epoch'):
        epoch_sizes(steps, 224, 5)
    assert epoch_sizes(steps, 224, 5, strict=False) == (96, 96, 128, 128, 128)
    for bad, match in ((['96@1', '128@2'], 'begin at 0'), (['96@0', '128@0'], 'rise'),
                       (['96@0', '128'], 'every size')):
        with pytest.raises(ValueError, match=match):
            epoch_sizes(size_steps(bad), 224, 10)
    for bad in ('0', '3', '2.5', 'big', '64@x', '-0.5'):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size_step(bad)


# ---------------------------------------------------------------- --time-budget's fit (pure)

def test_fit_run_takes_the_longest_run_the_injected_step_times_allow_to_the_update():
    steps = size_steps(['0.75', '1.0'])
    times = budget.StepTimes({48: 1.0, 64: 2.0}, epoch_overhead=0.0, spent=0.0, source='injected')

    def sizes_for(epochs):
        return epoch_sizes(steps, 64, epochs)
    # 10 updates/epoch: 48 px epochs cost 10 s, 64 px epochs 20 s. 7 epochs (48 x 3, 64 x 4) cost 110 s; cut
    # to 5 updates of its last epoch, 30 + 3 x 20 + 5 x 2 = 100 s: the budget exactly. 8 epochs could not
    # start their last (4 x 10 + 3 x 20 = 100 s before it)
    assert budget.fit_run(100, 10, times, sizes_for) == budget.Fit(7, 5, 100.0)
    assert budget.predicted_seconds(sizes_for(6), 10, times) == 90  # whole epochs alone would leave 10 s
    # the measuring time and a per-epoch overhead (the cut epoch validates too) come out of the budget
    assert budget.fit_run(100, 10, budget.StepTimes(times.per_update, 0.0, 15.0, 'x'), sizes_for) == \
        budget.Fit(6, 7, 99.0)  # 85 s left: 30 + 2 x 20 before the last, 7 x 2 of it
    assert budget.fit_run(100, 10, budget.StepTimes(times.per_update, 5.0, 0.0, 'x'), sizes_for) == \
        budget.Fit(5, 7, 99.0)  # (10 + 5) x 2 + (20 + 5) x 2 + 5 before the last update
    # at least one update, even over budget
    assert budget.fit_run(5, 10, times, sizes_for) == budget.Fit(1, 2, 4.0)
    assert budget.fit_run(1, 10, times, sizes_for) == budget.Fit(1, 1, 2.0)
    # no schedule: every epoch at the train size; a last epoch that fits whole is not cut
    assert budget.fit_run(100, 10, times, lambda e: (64,) * e) == budget.Fit(5, None, 100.0)


def test_a_cut_last_epoch_ends_the_lr_schedule_at_its_last_update():
    args = argparse.Namespace(epochs=3, last_epoch_updates=2, warmup_epochs=1, sched_on_updates=True)
    assert [epoch_updates(args, 4, e) for e in range(3)] == [4, 4, 2]
    assert lr_schedule(args, 4).total_updates == 10
    whole = argparse.Namespace(**{**vars(args), 'last_epoch_updates': None})
    assert lr_schedule(whole, 4).total_updates == 12
    assert epoch_updates(argparse.Namespace(epochs=3, last_epoch_updates=9), 4, 2) == 4  # at most a whole epoch


def test_the_measured_validation_counts_the_val_loaders_fetching():
    """A validation's cost is its loader's too: a val loader that takes 0.05 s per batch to deliver (decoding,
    in a real one) must show in the per-epoch overhead, once per pass (two with an EMA)."""
    import time

    def slow_val(n=8, delay=0.05):
        for _ in range(n):
            time.sleep(delay)
            yield torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)

    model = regzoo.create_model('regnetx_002', num_classes=4)
    train = [(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))] * (budget.MEASURED_UPDATES + 1)

    def measure(eval_loader, passes):
        return budget.measure_step_times(
            model, lambda size: train, [32], accum=1, device=torch.device('cpu'), memory_format=torch.contiguous_format,
            autocast=lambda: contextlib.nullcontext(), eval_loader=eval_loader, eval_batches=8, eval_passes=passes,
            source='injected')
    one, two = measure(slow_val(), 1), measure(slow_val(), 2)
    assert one.epoch_overhead >= 8 * 0.05 and two.epoch_overhead >= 2 * 8 * 0.05
    assert measure(slow_val(delay=0.0), 1).epoch_overhead < one.epoch_overhead - 0.2
    assert set(one.per_update) == {32} and one.per_update[32] > 0


def test_the_measurement_takes_a_rank_without_val_images_and_a_one_batch_train_split():
    model = regzoo.create_model('regnetx_002', num_classes=4)
    one = [(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))]
    times = budget.measure_step_times(
        model, lambda size: one, [32], accum=1, device=torch.device('cpu'), memory_format=torch.contiguous_format,
        autocast=lambda: contextlib.nullcontext(), eval_loader=[], eval_batches=0, eval_passes=1, source='x')
    assert times.per_update[32] > 0  # the one update's time, warm-up included: a rate the fit can use
    assert 0 <= times.epoch_overhead < 1
    assert budget.fit_run(60, 1, times, lambda e: (32,) * e).epochs >= 1


def test_a_new_length_typed_on_resume_drops_the_fitted_cut():
    saved = {'epochs': 3, 'last_epoch_updates': 2, 'time_budget': 1.0}
    kept = resolve_args(parse_args([], resumed_args=saved), 1)
    assert (kept.epochs, kept.last_epoch_updates, kept.time_budget) == (3, 2, 1.0)
    longer = resolve_args(parse_args(['--epochs', '5'], resumed_args=saved), 1)
    assert (longer.epochs, longer.last_epoch_updates, longer.time_budget) == (5, None, None)


# ---------------------------------------------------------------- training runs

def _spy_on_train_inputs(monkeypatch, stop_after: int | None = None) -> list[int]:
    """The side of every training batch the model sees; optionally a real SIGTERM after ``stop_after`` of them
    (the run saves and exits at the end of that update)."""
    import regzoo.training.components as components
    seen: list[int] = []
    real = components.create_model

    def create_model(*args, **kwargs):
        model = real(*args, **kwargs)

        def hook(module, inputs):
            if module.training:
                seen.append(inputs[0].shape[-1])
                if stop_after is not None and len(seen) == stop_after:
                    signal.raise_signal(signal.SIGTERM)
        model.register_forward_pre_hook(hook)
        return model
    monkeypatch.setattr(components, 'create_model', create_model)
    return seen


def test_each_epoch_trains_at_its_size_and_evaluates_above_it(data_dir, tmp_path, monkeypatch, capsys):
    seen = _spy_on_train_inputs(monkeypatch)
    code = main(['--data-dir', str(data_dir), *TINY, '--epochs', '3', '--train-sizes', '0.75', '28', '1.0',
                 '--test-img-size', '1.25', '--output', str(tmp_path), '--experiment', 'run'])
    assert code == 0
    assert seen == [24] * 4 + [28] * 4 + [32] * 4  # 64 images / batch 16 = 4 updates per epoch
    out = capsys.readouterr().out
    assert 'random-resized crops 24 (epoch 0), 28 (epoch 1), 32 (epoch 2)' in out
    assert 'eval      40x40' in out
    saved = yaml.safe_load((tmp_path / 'run' / 'args.yaml').read_text())
    assert saved['epoch_sizes'] == [24, 28, 32] and saved['train_size'] == [32, 32]
    assert saved['data_config']['input_size'] == [3, 40, 40]
    # the eval size is the run's: config.json, so validate.py and predict evaluate at it
    config = json.loads((tmp_path / 'run' / 'config.json').read_text())['pretrained_cfg']
    assert config['input_size'] == [3, 32, 32] and config['test_input_size'] == [3, 40, 40]
    model = regzoo.create_model('regnetx_002', checkpoint_path=tmp_path / 'run')
    assert regzoo.resolve_data_config(model=model).input_size == (3, 40, 40)
    assert regzoo.resolve_data_config(model=model, use_test_size=False).input_size == (3, 32, 32)


def _stop_and_resume(monkeypatch, argv: list[str], run_dir: Path, stop_after: int) -> tuple[tuple[int, int], list[int]]:
    """Run ``argv`` until a SIGTERM after ``stop_after`` batches, then ``--resume`` it: the saved (epoch,
    step_in_epoch) and the sides of the batches the resumed part trained."""
    _spy_on_train_inputs(monkeypatch, stop_after=stop_after)
    assert main(argv) == 128 + signal.SIGTERM
    state = torch.load(run_dir / 'last.state.pt', weights_only=True)
    monkeypatch.undo()
    seen = _spy_on_train_inputs(monkeypatch)
    assert main(['--resume', str(run_dir)]) == 0
    return (state['epoch'], state['step_in_epoch']), seen


def test_a_resume_mid_schedule_reproduces_the_uninterrupted_run(data_dir, tmp_path, monkeypatch):
    common = ['--data-dir', str(data_dir), *TINY, '--epochs', '3', '--train-sizes', '24', '28', '32',
              '--channels-last', '--output', str(tmp_path)]
    assert main([*common, '--experiment', 'whole']) == 0
    # stopped in epoch 1 (28 px), update 2 of 4
    stopped, seen = _stop_and_resume(monkeypatch, [*common, '--experiment', 'killed'], tmp_path / 'killed', 6)
    assert stopped == (1, 2)
    assert seen == [28] * 2 + [32] * 4  # the rest of epoch 1 at its size, then epoch 2's
    whole, killed = (load_file(tmp_path / run / 'last.safetensors') for run in ('whole', 'killed'))
    assert whole.keys() == killed.keys() and all(torch.equal(whole[k], killed[k]) for k in whole)
    rows = [list(csv.DictReader((tmp_path / run / 'summary.csv').open())) for run in ('whole', 'killed')]
    assert [(r['top1'], r['val_loss']) for r in rows[0]] == [(r['top1'], r['val_loss']) for r in rows[1]]


def test_a_cut_last_epoch_trains_its_updates_and_resumes_inside_them(data_dir, tmp_path, monkeypatch, capsys):
    common = ['--data-dir', str(data_dir), *TINY, '--epochs', '3', '--last-epoch-updates', '2', '--sched-on-updates',
              '--train-sizes', '24', '28', '32', '--output', str(tmp_path)]
    seen = _spy_on_train_inputs(monkeypatch)
    assert main([*common, '--experiment', 'whole']) == 0
    assert seen == [24] * 4 + [28] * 4 + [32] * 2
    out = capsys.readouterr().out
    assert 'schedule  3 epoch(s) x 4 updates (the last cut to 2), ' in out
    # the cosine spans the 10 updates: the last one's lr is 0.024 x lr (at update 9 of 12 it would be 0.146 x)
    rows = list(csv.DictReader((tmp_path / 'whole' / 'summary.csv').open()))
    assert len(rows) == 3 and float(rows[-1]['lr']) == pytest.approx(0.1 * (1 + math.cos(math.pi * 9 / 10)) / 2)
    monkeypatch.undo()
    # stopped in epoch 2, update 1 of its 2
    stopped, seen = _stop_and_resume(monkeypatch, [*common, '--experiment', 'killed'], tmp_path / 'killed', 9)
    assert stopped == (2, 1)
    assert seen == [32]  # the cut epoch's one update left, kept from the resumed run's args
    whole, killed = (load_file(tmp_path / run / 'last.safetensors') for run in ('whole', 'killed'))
    assert all(torch.equal(whole[k], killed[k]) for k in whole)


def test_time_budget_fits_the_epochs_and_says_so(data_dir, tmp_path, capsys):
    code = main(['--data-dir', str(data_dir), *TINY, '--time-budget', '0.25', '--train-sizes', '0.75', '1.0',
                 '--output', str(tmp_path), '--experiment', 'run'])
    assert code == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith('  budget    0.25 min: '))
    epochs = int(line.split(': ')[1].split(' epoch')[0])
    assert 'fitted from 5 updates on the train split per size (24px ' in line and '32px ' in line
    saved = yaml.safe_load((tmp_path / 'run' / 'args.yaml').read_text())
    assert saved['epochs'] == epochs and len(saved['epoch_sizes']) == epochs
    cut = saved['last_epoch_updates']  # the budget's remainder after the whole epochs, to the update
    assert cut is None or 1 <= cut < 4
    assert (f', the last cut to {cut} update(s),' in line) == (cut is not None)
    assert saved['epoch_sizes'][-1] == 32 and saved['time_budget'] == 0.25
    rows = list(csv.DictReader((tmp_path / 'run' / 'summary.csv').open()))
    assert len(rows) == epochs >= 1
    assert f'trained {epochs} epoch(s)' in out and 'of the 0.25-min budget' in out


def test_budget_and_size_flags_refuse_bad_values(data_dir, tmp_path):
    base = ['--data-dir', str(data_dir), *TINY, '--output', str(tmp_path)]
    with pytest.raises(TrainingInputError, match='give one of them'):
        main([*base, '--epochs', '3', '--time-budget', '1'])
    with pytest.raises(TrainingInputError, match='--time-budget must be > 0'):
        main([*base, '--time-budget', '0'])
    with pytest.raises(TrainingInputError, match='--time-budget sets --last-epoch-updates itself'):
        main([*base, '--time-budget', '1', '--last-epoch-updates', '2'])
    with pytest.raises(TrainingInputError, match='--last-epoch-updates must be >= 1'):
        main([*base, '--last-epoch-updates', '0'])
    with pytest.raises(TrainingInputError, match='start.* at or after the last epoch'):
        main([*base, '--epochs', '2', '--train-sizes', '24@0', '32@5'])
    with pytest.raises(SystemExit):
        parse_args(['--train-sizes', '0.75', 'big'])
    assert not any(tmp_path.iterdir())  # nothing written


def test_fast_recipe_is_budget_aware():
    recipe = load_recipe('fast')
    args = resolve_args(parse_args(['--recipe', 'fast', '--time-budget', '30']), world_size=1)
    assert args.time_budget == 30 and args.sched_on_updates and args.min_lr == 0.0
    assert args.train_sizes == recipe['train_sizes'] and size_steps(args.train_sizes)[-1].size(64) == 64
    assert not args.decay_norm_bias and args.smoothing > 0 and args.color_jitter == 0.0
    # the recipe's epochs are a default: --epochs typed sets the length, the ramp stretches to it
    assert resolve_args(parse_args(['--recipe', 'fast', '--epochs', '40']), world_size=1).epochs == 40
