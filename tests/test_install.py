"""Packaging: optional extras fail with the pip command that installs them, and a non-editable install works.

The install tests really build and install regzoo (``pip install --no-deps --no-build-isolation --target``)
and run it from outside the checkout with only the installed copy importable: ``python -m regzoo``, the
packaged metrics table, and validate.py on a generated image folder.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import class_folders

import regzoo
from regzoo.deploy.export import export_model
from regzoo.utils.extras import MissingExtraError, require

REPO = Path(regzoo.__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------- optional extras

def test_require_returns_the_module():
    assert require('json', 'export', 'anything') is sys.modules['json']


@pytest.mark.parametrize('module, purpose, extra', [
    ('onnx', 'ONNX export', 'export'),
    ('matplotlib', 'plotting', 'plot'),
])
def test_require_names_the_extra_when_the_module_is_absent(module, purpose, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # how the import system marks a module unimportable
    with pytest.raises(MissingExtraError) as info:
        require(module, extra, purpose)
    assert str(info.value) == f"{purpose} needs {module}; install it with: pip install 'regzoo[{extra}]'"
    assert isinstance(info.value, ImportError) and info.value.name == module


def test_require_keeps_errors_of_an_installed_module(monkeypatch, tmp_path):
    """Only the absence of the module itself is an extras problem; a broken dependency keeps its own error."""
    (tmp_path / 'regzoo_broken_extra.py').write_text('import regzoo_missing_dependency\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require('regzoo_broken_extra', 'export', 'x')
    assert type(info.value) is ModuleNotFoundError and info.value.name == 'regzoo_missing_dependency'


@pytest.mark.parametrize('absent, dynamo, message', [
    ('onnx', False, "ONNX export needs onnx; install it with: pip install 'regzoo[export]'"),
    ('onnxruntime', False, "checking an ONNX export needs onnxruntime; install it with: pip install 'regzoo[export]'"),
    ('onnxscript', True,
     "ONNX export with dynamo=True needs onnxscript; install it with: pip install 'regzoo[export]'"),
])
def test_onnx_export_without_the_export_extra(absent, dynamo, message, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, absent, None)
    model = regzoo.create_model('regnetx_002', num_classes=4)
    with pytest.raises(MissingExtraError, match=r'^' + message.replace('[', r'\[').replace(']', r'\]') + '$'):
        export_model(model, tmp_path / 'm.onnx', 'onnx', input_size=(3, 32, 32), opset=18, dynamo=dynamo)
    assert not (tmp_path / 'm.onnx').exists()


def test_export_cli_without_onnx_exits_2_with_one_line(monkeypatch, tmp_path, capsys):
    from regzoo.cli.export import main
    monkeypatch.setitem(sys.modules, 'onnx', None)
    out = tmp_path / 'm.onnx'
    assert main(['--model', 'regnetx_002', '--format', 'onnx', '--out', str(out), '--input-size', '32']) == 2
    captured = capsys.readouterr()
    assert captured.err == ("python -m regzoo.export: error: ONNX export needs onnx; "
                            "install it with: pip install 'regzoo[export]'\n")
    assert captured.out == '' and not out.exists()


def test_export_cli_without_onnx_still_exports_torchscript(monkeypatch, tmp_path, capsys):
    """The extra is needed for ONNX only: the other formats work without it."""
    from regzoo.cli.export import main
    monkeypatch.setitem(sys.modules, 'onnx', None)
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    out = tmp_path / 'm.pt'
    assert main(['--model', 'regnetx_002', '--num-classes', '4', '--format', 'torchscript', '--out', str(out),
                 '--input-size', '32']) == 0
    assert out.is_file() and 'OK' in capsys.readouterr().out


def test_tables_cli_without_matplotlib_exits_2_before_writing(monkeypatch, tmp_path, capsys):
    from regzoo.cli.tables import main
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    assert main(['--out-dir', str(tmp_path / 'results')]) == 2
    assert capsys.readouterr().err == ("python -m regzoo.tables: error: the accuracy-vs-GFLOPs plot needs "
                                       "matplotlib; install it with: pip install 'regzoo[plot]'\n")
    assert not (tmp_path / 'results').exists()


def test_edf_plot_without_matplotlib(monkeypatch, tmp_path):
    from regzoo.analysis.design_analysis import write_edf
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    cfgs = [regzoo.MODEL_CFGS['regnetx_002'], regzoo.MODEL_CFGS['regnetx_004']]
    with pytest.raises(MissingExtraError, match=r"^plotting an EDF needs matplotlib; .*'regzoo\[plot\]'$"):
        write_edf([(cfgs[0], 40.0), (cfgs[1], 35.0)], tmp_path)


def test_extras_are_declared_in_pyproject():
    """What the error messages promise: `pip install 'regzoo[export]'` / `[plot]` install those modules."""
    tomllib = pytest.importorskip('tomllib')  # Python >= 3.11
    extras = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['optional-dependencies']
    names = {k: {req.split('>')[0].split('=')[0].split('[')[0].strip() for req in v} for k, v in extras.items()}
    assert names['export'] == {'onnx', 'onnxruntime', 'onnxscript'}
    assert names['plot'] == {'matplotlib'}
    assert names['data'] == {'webdataset', 'datasets'}
    assert 'regzoo[export,plot]' in extras['test'] and 'regzoo[data]' in extras['test']
    assert names['openvino'] == {'openvino', 'onnx', 'onnxscript'} and 'regzoo[openvino]' in extras['test']


def test_console_scripts_run_the_cli_modules():
    """Each console script in pyproject.toml is ``regzoo.cli.NAME:run`` of its own command."""
    import importlib
    tomllib = pytest.importorskip('tomllib')  # Python >= 3.11
    scripts = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['scripts']
    assert set(scripts) == {f'regzoo-{n}' for n in ('train', 'validate', 'predict', 'export', 'benchmark')}
    for script, target in scripts.items():
        module, func = target.split(':')
        assert (module, func) == (f'regzoo.cli.{script.removeprefix("regzoo-")}', 'run')
        assert callable(getattr(importlib.import_module(module), func))


# ---------------------------------------------------------------------------------- non-editable install

@pytest.fixture(scope='module')
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(site dir holding a non-editable regzoo, env that imports only it, a cwd outside the checkout)."""
    root = tmp_path_factory.mktemp('install')
    src = root / 'src'  # build from a copy: an in-tree build would write build/ into the shared checkout
    src.mkdir()
    for name in ('pyproject.toml', 'setup.cfg', 'README.md'):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / 'regzoo', src / 'regzoo', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    site = root / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation', '--no-index',
                    '--target', str(site), str(src)], check=True, capture_output=True, text=True, cwd=root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'HF_'))}
    # PYTHONPATH precedes the venv's editable finder (appended to sys.meta_path); an empty HF cache
    # makes the demo's "weights present?" check deterministic
    env.update(PYTHONPATH=str(site), HF_HOME=str(root / 'hf'), HF_HUB_OFFLINE='1')
    cwd = root / 'cwd'
    cwd.mkdir()
    return site, env, cwd


def _run(installed, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    _, env, cwd = installed
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_install_ships_every_package_file(installed):
    """Every module and data file of the checkout's package (metrics table, recipes) is in the install."""
    site = installed[0]
    ours = {p.relative_to(REPO) for p in (REPO / 'regzoo').rglob('*') if p.is_file() and '__pycache__' not in p.parts}
    theirs = {p.relative_to(site) for p in (site / 'regzoo').rglob('*') if p.is_file() and '__pycache__' not in p.parts}
    assert ours - theirs == set()
    assert {Path('regzoo/zoo/published.csv'), Path('regzoo/training/recipes/pycls.yaml')} <= theirs


def test_installed_copy_reads_its_packaged_metrics(installed):
    code = ("import regzoo; print(regzoo.__file__); print(regzoo.get_pretrained_cfg('regnety_032').top1); "
            "from regzoo.training import load_recipe; print(sorted(load_recipe('pycls'))[:1])")
    out = _run(installed, '-c', code)
    assert out.returncode == 0, out.stderr
    path, top1, recipe = out.stdout.splitlines()
    assert Path(path).is_relative_to(installed[0]), f'imported {path}, not the installed copy'
    assert top1 == '82.724'
    assert recipe.startswith("['")


def test_installed_main_job_prints_the_zoo(installed):
    out = _run(installed, '-m', 'regzoo')
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f'regzoo {regzoo.__version__}: {len(regzoo.list_models())} architectures')
    assert any(line.split()[:1] == ['regnety_032'] and line.split()[-1] == '82.72' for line in lines), out.stdout
    assert 'max |logit - timm logit| with the same weights: 0.00e+00' in out.stdout


def test_installed_console_script_runs(installed):
    site, env, cwd = installed
    out = subprocess.run([str(site / 'bin' / 'regzoo-predict'), '--help'], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('usage: python -m regzoo.cli.predict')


def test_installed_validate_on_a_generated_folder(installed, tmp_path):
    data = class_folders(tmp_path / 'val', ['cat', 'dog', 'eel'], n=3, ext='.png', size=40)
    torch.manual_seed(0)
    ckpt = regzoo.save_pretrained(regzoo.create_model('regnetx_002', num_classes=3), tmp_path / 'ckpt')
    results = tmp_path / 'results.csv'
    out = _run(installed, '-m', 'regzoo.validate', '--data-dir', str(data), '--model', 'regnetx_002',
               '--checkpoint', str(ckpt), '--img-size', '32', '-b', '4', '-j', '0', '--device', 'cpu',
               '--results-file', str(results))
    assert out.returncode == 0, out.stderr
    header, row = results.read_text().splitlines()
    top1 = float(dict(zip(header.split(','), row.split(',')))['top1'])
    assert 0 <= top1 <= 100
    summary = next(line for line in out.stdout.splitlines() if line.startswith('regnetx_002 '))
    assert f'{top1:7.3f}' in summary, out.stdout
