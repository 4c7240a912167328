"""Deployment: TorchScript, torch.export (.pt2) and ONNX files re-loaded and compared with eager, and the CLI.

Default run: a representative subset (a small X, a mid Y, a torchvision-rounded net, a large Y) at 64x64.
Every arch: ``pytest -m slow tests/test_export.py``. Checked at batch sizes 1 and 3 after tracing at 2,
so a batch size frozen into the graph fails.
"""
import copy
import re

import pytest
import timm
import torch
from helpers import buildable, randomize_bn

import regzoo
from regzoo.deploy.export import FORMATS, ONNX_INLINE_BYTES, export_model, tensor_bytes, write_onnx_atomically
from regzoo.cli.export import main

SUBSET = ('regnetx_002', 'regnety_032', 'regnetx_004_tv', 'regnety_160')
INPUT = (3, 64, 64)
TOL = 1e-4


def _cases():
    """(arch, format, num_classes after reset_classifier or None): the built head for the subset, head changes
    for the smallest arch (TorchScript, ONNX); everything else under the slow marker."""
    for arch in buildable(regzoo.list_models()):  # not the 10B model: 37 GB
        for fmt in FORMATS:
            for head in (None, 0, 10):
                fast = arch in SUBSET and (head is None or (arch == 'regnetx_002' and fmt != 'pt2'))
                yield pytest.param(arch, fmt, head, marks=() if fast else pytest.mark.slow, id=f'{arch}-{fmt}-{head}')


def realistic(model: torch.nn.Module) -> torch.nn.Module:
    """Random BN affine params, then running stats measured on random images, as training would leave them.

    With arbitrary running stats activations grow ~10x per stage (logits ~1e3-1e4), where fp32 rounding
    alone exceeds an absolute 1e-4; measured stats keep them O(1) like a trained net's.
    """
    randomize_bn(model)
    with torch.no_grad():
        for block in model.modules():
            if hasattr(block, 'conv3') and hasattr(block.conv3, 'bn'):
                # trained with zero_init_last, residual branches end with small gains; 1.0 compounds over depth
                block.conv3.bn.weight.mul_(0.2)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batch
    with torch.no_grad():
        model.train()(torch.randn(8, *INPUT, generator=torch.Generator().manual_seed(0)))
    for m in norms:
        m.momentum = 0.1
        # channels random images leave (nearly) dead get a tiny variance, i.e. a huge BN gain that
        # amplifies rounding; a trained net's are not that extreme
        m.running_var.clamp_(min=0.1 * m.running_var.mean().item())
    return model.eval()


@pytest.fixture(scope='module')
def randomized():
    """One randomized model per arch, built once for every format and head (copied before any change)."""
    built = {}

    def get(arch: str) -> torch.nn.Module:
        if arch not in built:
            built.clear()  # keep one at a time: the big ones are GBs
            built[arch] = realistic(regzoo.create_model(arch))
        return built[arch]
    return get


@pytest.mark.parametrize('arch, fmt, head', list(_cases()))
def test_export_parity(arch, fmt, head, randomized, tmp_path):
    model = randomized(arch)
    if head is not None:
        model = copy.deepcopy(model)
        model.reset_classifier(head)
    report = export_model(model, tmp_path / f'{arch}.{fmt}', fmt, INPUT)
    assert report.batch_sizes == (1, 3)
    assert report.max_abs_diff <= TOL, report.summary()


@pytest.mark.parametrize('arch', [
    pytest.param(a, marks=pytest.mark.slow) for a in buildable(regzoo.list_models())])
def test_onnx_dynamo_exporter(arch, randomized, tmp_path):
    report = export_model(randomized(arch), tmp_path / f'{arch}.onnx', 'onnx', INPUT, opset=18, dynamo=True)
    assert report.max_abs_diff <= TOL, report.summary()


def test_onnx_file_is_dynamic_batch_opset_18(randomized, tmp_path):
    import onnx
    export_model(randomized('regnetx_002'), tmp_path / 'm.onnx', 'onnx', INPUT, opset=18)
    graph = onnx.load(str(tmp_path / 'm.onnx'))
    assert max(o.version for o in graph.opset_import if o.domain in ('', 'ai.onnx')) == 18
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(INPUT)


@pytest.mark.parametrize('train', [False, True])
def test_compile_fullgraph(train):
    """No graph break in SE, drop-path or dropout: fullgraph=True raises on the first one."""
    torch.manual_seed(0)
    model = randomize_bn(regzoo.create_model('regnety_002', drop_path_rate=0.2, drop_rate=0.2)).train(train)
    compiled = torch.compile(model, fullgraph=True, backend='eager')
    x = torch.randn(2, *INPUT)
    torch.manual_seed(1)
    got = compiled(x)
    torch.manual_seed(1)
    expected = model(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_cli_with_checkpoint(tmp_path, capsys):
    """The CLI loads a local timm checkpoint (10 classes), writes TorchScript and prints the parity it measured."""
    ref = randomize_bn(timm.create_model('regnety_002', num_classes=10)).eval()
    torch.save(ref.state_dict(), tmp_path / 'ft.pth')
    out = tmp_path / 'y002.torchscript'
    rc = main(['--model', 'regnety_002', '--checkpoint', str(tmp_path / 'ft.pth'), '--format', 'torchscript',
               '--out', str(out), '--input-size', '64'])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    diff = float(re.search(r'max\|d\| = (\S+)', printed).group(1))
    assert diff <= TOL and 'OK' in printed
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), ref(x), rtol=0, atol=1e-5)


def test_cli_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(['--model', 'regnetx_002', '--format', 'onnx', '--out', str(tmp_path / 'm.onnx'), '--opset', '13'])
    assert '--opset 13 is invalid: must be >= 17' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--model', 'regnetx_002', '--format', 'tflite', '--out', str(tmp_path / 'm.tflite')])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown model 'regnetx_02'"):
        main(['--model', 'regnetx_02', '--format', 'onnx', '--out', str(tmp_path / 'm.onnx')])
    with pytest.raises(ValueError, match="format 'tflite' is invalid"):
        export_model(regzoo.create_model('regnetx_002'), tmp_path / 'm', 'tflite', INPUT)


def test_onnx_files_are_written_atomically_inline_or_with_their_external_data(tmp_path):
    """Below protobuf's 2 GiB the weights are inside the one file; above it in ``<name>.data``, which the .onnx
    names, so that file is written under its final name too (not the temp name) and the pair loads."""
    ort = pytest.importorskip('onnxruntime')
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)

    def export(target, external):
        torch.onnx.export(model, (x,), str(target), dynamo=True, external_data=external, verbose=False)
    for folder, nbytes, files in (('small', tensor_bytes(model), ['m.onnx']),
                                  ('large', ONNX_INLINE_BYTES, ['m.onnx', 'm.onnx.data'])):
        (tmp_path / folder).mkdir()
        write_onnx_atomically(tmp_path / folder / 'm.onnx', export, nbytes)
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == files
        session = ort.InferenceSession(str(tmp_path / folder / 'm.onnx'), providers=['CPUExecutionProvider'])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, model(x), rtol=0, atol=1e-5)
    assert tensor_bytes(model) == (8 * 3 * 3 * 3 + 8) * 4


def test_torchscript_export_prints_no_jit_deprecation(tmp_path):
    """issue 23: each TorchScript export printed torch's three jit FutureWarnings; regzoo silences exactly those."""
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, '-m', 'regzoo.export', '--model', 'regnetx_002', '--format', 'torchscript',
                          '--out', str(tmp_path / 'm.pt'), '--input-size', '32'],
                         capture_output=True, text=True, env={**os.environ, 'PYTHONWARNINGS': 'default'}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'FutureWarning' not in out.stderr and 'deprecated' not in out.stderr, out.stderr
    with pytest.warns(FutureWarning, match='torch.jit.script'):  # outside regzoo's export torch still says it
        torch.jit.script(regzoo.create_model('regnetx_002'))
