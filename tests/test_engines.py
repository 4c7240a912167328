"""Inference engines (``regzoo.deploy.engines``): torch, ONNX Runtime and OpenVINO behind optimize_for_inference.

Each engine's logits against eager PyTorch (fp32: 1e-3 relative) at batch sizes other than the one it was built
with; the int8 engines against the exact int8 arithmetic of the quantized graph; 'auto''s rule on injected timings
and on real ones; a missing extra; nothing written to disk unless asked. regnetx_002 at 64 px keeps it quick. No
speed is asserted: see benchmarks/engines.py.
"""
from __future__ import annotations

import logging
import os
import sys

import pytest
import torch
from helpers import max_rel_diff, randomize_bn

import regzoo
from regzoo.deploy.engines import PARITY_RTOL, check_parity
from regzoo.deploy.engines_choice import ENGINES, MIN_INT8_AGREEMENT, EngineError, choose_engine
from regzoo.utils.extras import MissingExtraError

pytest.importorskip('onnxruntime', reason="the onnxruntime engine needs the [export] extra")
pytest.importorskip('openvino', reason="the openvino engine needs the [openvino] extra")

CLASSES = 10


@pytest.fixture(scope='module')
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(regzoo.create_model('regnetx_002', num_classes=CLASSES)).eval()


@pytest.fixture(scope='module')
def images() -> torch.Tensor:
    return torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    """HOME in a new empty folder and no cache variables: whatever a call writes by default would land there."""
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    for var in ('XDG_CACHE_HOME', 'REGZOO_CACHE'):
        monkeypatch.delenv(var, raising=False)
    return home


def _written(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files)


# --------------------------------------------------------------------------------------- the rule, pure

def test_choose_engine_keeps_the_fastest_of_injected_timings():
    choice = choose_engine({'torch': 5.0, 'onnxruntime': 3.0, 'openvino': 4.0}, shape=(32, 3, 224, 224))
    assert choice.engine == 'onnxruntime' and choice.ms['torch'] == 5.0 and choice.shape == (32, 3, 224, 224)
    assert choice.reason.startswith('fastest at 32x3x224x224: onnxruntime 3.00 ms, openvino 4.00 ms (1.33x), '
                                    'torch 5.00 ms (1.67x)')
    # a tie goes to the engine earlier in ENGINES; skipped engines are reported, not chosen
    tie = choose_engine({'openvino': 2.0, 'torch': 2.0}, {'onnxruntime': 'not installed'})
    assert tie.engine == 'torch' and tie.skipped == {'onnxruntime': 'not installed'}
    assert 'onnxruntime not a candidate: not installed' in tie.reason


def test_choose_engine_int8_needs_the_agreement():
    ms = {'torch': 5.0, 'onnxruntime': 2.0, 'openvino': 3.0}
    choice = choose_engine(ms, agreement={'torch': 1.0, 'onnxruntime': 0.985, 'openvino': MIN_INT8_AGREEMENT})
    assert choice.engine == 'openvino'  # the fastest, onnxruntime, agrees with fp32 too rarely
    assert 'onnxruntime' in choice.skipped and '0.985 < 0.99' in choice.skipped['onnxruntime']
    with pytest.raises(EngineError, match=r"found no engine .*torch: top-1 agreement with fp32 0\.900 < 0\.99"):
        choose_engine({'torch': 1.0}, agreement={'torch': 0.9})


def test_check_parity_raises_one_clear_line(model, images):
    with torch.no_grad():
        expected = model(images[:2])
    check_parity('onnxruntime', lambda x: expected * (1 + PARITY_RTOL / 2), images[:2], expected)
    with pytest.raises(EngineError, match=r"^engine='openvino' disagrees with eager PyTorch: max \|d\| / max \|logit\| "
                                          r"= 0\.01 > 0\.001 on a 2x3x64x64 batch; use engine='torch'$"):
        check_parity('openvino', lambda x: expected * 1.01, images[:2], expected)


# --------------------------------------------------------------------------------------- fp32 engines

@pytest.mark.parametrize('engine', ENGINES)
def test_each_engine_equals_eager_at_other_batch_sizes(model, images, engine, fresh_home):
    fast = regzoo.optimize_for_inference(model, engine=engine, example_input=images[:2])
    assert fast.engine == engine and fast.engine_choice.engine == engine
    assert fast.engine_choice.reason == f"requested (engine={engine!r})"
    for batch in (1, 3):  # built for batch 2: the batch axis stays dynamic
        x = images[:batch]
        with torch.no_grad():
            got, expected = fast(x), model(x)
        assert got.shape == (batch, CLASSES) and got.dtype == torch.float32
        assert max_rel_diff(expected, got) <= PARITY_RTOL
    assert fast(images[:1].double()).dtype == torch.float64  # logits come back in the input's dtype
    with pytest.raises(RuntimeError, match='eval-only'):
        fast.train()
    assert _written(fresh_home) == []


def test_auto_measures_every_engine_and_keeps_the_fastest(model, images, fresh_home, caplog):
    with caplog.at_level(logging.INFO, logger='regzoo.deploy.engines'):
        fast = regzoo.optimize_for_inference(model, engine='auto', example_input=images[:2])
    choice = fast.engine_choice
    assert set(choice.ms) == set(ENGINES) and choice.shape == (2, 3, 64, 64)
    assert fast.engine == choice.engine == min(choice.ms, key=choice.ms.get)
    assert f"engine='auto' chose {fast.engine}" in caplog.text
    with torch.no_grad():
        assert max_rel_diff(model(images[:3]), fast(images[:3])) <= PARITY_RTOL
    assert _written(fresh_home) == []  # the decision lives in memory


def test_cache_path_keeps_the_choice(model, images, tmp_path):
    path = tmp_path / 'choices.json'
    first = regzoo.optimize_for_inference(model, engine='auto', example_input=images[:1], cache_path=path)
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == ['choices.json']  # atomic: no temp left
    again = regzoo.optimize_for_inference(model, engine='auto', example_input=images[:1], cache_path=path)
    assert again.engine == first.engine and again.engine_choice.ms == first.engine_choice.ms
    assert again.engine_choice.reason.startswith(f'from {path}: fastest at 1x3x64x64')


def test_missing_extra_is_one_line_when_asked_and_skipped_by_auto(model, images, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, 'openvino', None)
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(MissingExtraError, match=r"^engine='openvino' needs openvino; install it with: "
                                                r"pip install 'regzoo\[openvino\]'$"):
        regzoo.optimize_for_inference(model, engine='openvino', example_input=images[:2])
    with pytest.raises(MissingExtraError, match=r"^engine='onnxruntime' needs onnxruntime; install it with: "
                                                r"pip install 'regzoo\[export\]'$"):
        regzoo.optimize_for_inference(model, engine='onnxruntime', example_input=images[:2])
    with caplog.at_level(logging.INFO, logger='regzoo.deploy.engines'):
        fast = regzoo.optimize_for_inference(model, engine='auto', example_input=images[:2],
                                             memory_format='channels_last')
    assert fast.engine == 'torch' and set(fast.engine_choice.skipped) == {'onnxruntime', 'openvino'}
    assert "engine='auto': skipping openvino: engine='openvino' needs openvino" in caplog.text


@pytest.mark.parametrize('kwargs, match', [
    (dict(engine='tensorrt'), r"engine='tensorrt' is invalid: must be one of \['torch', 'onnxruntime', "
                              r"'openvino', 'auto'\]"),
    (dict(engine='onnxruntime', dtype='bfloat16'), r"engine='onnxruntime' runs float32 and int8, not "
                                                   r"dtype='bfloat16': use engine='torch'"),
    (dict(engine='auto', dtype='int8'), r"dtype='int8' needs calibration_images"),
])
def test_bad_engine_arguments_raise_clearly(model, images, kwargs, match):
    with pytest.raises(EngineError, match=match):
        regzoo.optimize_for_inference(model, example_input=images[:2], **kwargs)


# --------------------------------------------------------------------------------------- int8 engines

@pytest.fixture(scope='module')
def reference_int8(model, images):
    pytest.importorskip('torchao', reason="int8 quantization needs the [quantize] extra")
    from regzoo.deploy.quantize import quantize_pt2e
    return quantize_pt2e(model, images, 'reference')  # the exact int8 arithmetic, run op by op


def _close_int8(got: torch.Tensor, expected: torch.Tensor) -> None:
    # engines round their requantization differently (one quantization step here and there), so not bit-equal
    assert got.shape == expected.shape and max_rel_diff(expected, got) < 0.3
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.9


@pytest.mark.parametrize('engine', ['onnxruntime', 'openvino'])
def test_each_int8_engine_computes_the_quantized_graph(model, images, reference_int8, engine, fresh_home):
    int8 = regzoo.quantize(model, images, engine=engine)
    assert int8.engine == engine and int8.engine_choice.agreement[engine] >= 0.0
    with torch.no_grad():
        for x in (images, images[:1], images[:3]):  # any batch size
            _close_int8(int8(x), reference_int8(x))
    assert _written(fresh_home) == []


def test_int8_auto_keeps_the_fastest_engine_that_agrees(model, images, reference_int8, fresh_home):
    int8 = regzoo.optimize_for_inference(model, engine='auto', dtype='int8', calibration_images=images)
    choice = int8.engine_choice
    assert set(choice.ms) == set(choice.agreement) == set(ENGINES)
    agreeing = {k: v for k, v in choice.ms.items() if choice.agreement[k] >= MIN_INT8_AGREEMENT}
    assert int8.engine == choice.engine == min(agreeing, key=agreeing.get)
    with torch.no_grad():
        _close_int8(int8(images), reference_int8(images))
    assert _written(fresh_home) == []



# --------------------------------------------------------------------------------------- written files

@pytest.mark.parametrize('engine', ['onnxruntime', 'openvino'])
def test_check_onnx_file_runs_a_written_file_in_the_engine(model, images, engine, tmp_path):
    from regzoo.deploy.engines import check_onnx_file
    from regzoo.deploy.export import write_onnx
    path = tmp_path / 'm.onnx'
    write_onnx(model, path, images[:2])
    found = check_onnx_file(path, engine, {'eager': model, 'off': lambda x: -model(x)}, [images[:1], images[:3]])
    with torch.no_grad():
        scale = model(images[:3]).abs().max().item()
    assert found['eager'][0] <= PARITY_RTOL * scale and found['eager'][1] == 1.0
    assert found['off'][0] > 1.0 * scale and found['off'][1] < 1.0  # a wrong reference shows
    with pytest.raises(EngineError, match=r"engine='torch' does not run ONNX files: use onnxruntime or openvino"):
        check_onnx_file(path, 'torch', {'eager': model}, [images[:1]])
