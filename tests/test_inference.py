"""optimize_for_inference: outputs equal the original's (and timm's), no grad, eval-only, input checks, dtype='auto'."""
import copy
import os
import subprocess
import sys
import warnings

import pytest
import timm
import torch
from helpers import max_rel_diff, randomize_bn

import regzoo
from regzoo.data.synthetic import synthetic_batch
from regzoo.deploy.inference import (
    MIN_BF16_AGREEMENT,
    DtypeChoice,
    FusedBottleneck,
    FusedConv,
    InferenceModel,
    choose_dtype,
    fold_bn,
    measure_dtype,
    torch_fast_path,
)
from regzoo.eval.loop import top1_agreement

ARCHS = ['regnetx_002', 'regnety_002', 'regnety_004']
FORMATS = ['channels_last', 'contiguous']


def _model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(regzoo.create_model(name, **kwargs)).eval()


@pytest.fixture(scope='module')
def inputs():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('memory_format', FORMATS)
@pytest.mark.parametrize('name', ARCHS)
def test_fp32_matches_original_and_timm(name, memory_format, inputs):
    model = _model(name)
    reference = timm.create_model(name).eval()
    reference.load_state_dict(model.state_dict())
    fast = torch_fast_path(model, memory_format=memory_format)
    with torch.no_grad():
        expected, theirs = model(inputs), reference(inputs)
    out = fast(inputs)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    assert max_rel_diff(expected, out) <= 1e-3
    assert max_rel_diff(theirs, out) <= 1e-3
    # BN really was folded: no BatchNorm left, the blocks are the fused ones
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, FusedBottleneck) for m in fast.modules())


@pytest.mark.parametrize('name', ['regnetx_002', 'regnety_002'])
def test_bfloat16_close_to_fp32(name, inputs):
    model = _model(name)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the no-native-bf16 warning on CPUs without AVX512-BF16
        fast = torch_fast_path(model, memory_format='channels_last', dtype='bfloat16')
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    out = fast(inputs)
    assert out.dtype == torch.float32  # cast back to the input's dtype
    with torch.no_grad():
        assert max_rel_diff(model(inputs), out) <= 5e-2


def test_no_bn_fold_keeps_modules_and_outputs(inputs):
    model = _model('regnety_002')
    fast = torch_fast_path(model, fuse_bn=False, memory_format='channels_last')
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    with torch.no_grad():
        assert max_rel_diff(model(inputs), fast(inputs)) <= 1e-5


def test_variants_outside_the_zoo_table(inputs):
    """silu / linear_out / avg shortcut / extra final conv / pre-activation (left unfused) / no classifier."""
    for kwargs, fmt in ((dict(act='silu', linear_out=True, downsample='avg', num_features=64), 'channels_last'),
                        (dict(act='silu', linear_out=True, downsample='avg', num_features=64), 'contiguous'),
                        (dict(preact=True, se_ratio=0.25), 'channels_last'), (dict(num_classes=0), 'contiguous'),
                        (dict(downsample=None), 'channels_last'), (dict(act='gelu', se_ratio=0.25), 'contiguous')):
        model = _model('regnetx_002', **kwargs)
        with torch.no_grad():
            expected = model(inputs)
        assert max_rel_diff(expected, torch_fast_path(model, memory_format=fmt)(inputs)) <= 1e-3, kwargs


def test_fold_bn_equals_conv_then_bn():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, groups=2, bias=True)
    bn = randomize_bn(torch.nn.Sequential(torch.nn.BatchNorm2d(16)))[0].eval()
    weight, bias = fold_bn(conv, bn)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        assert torch.allclose(bn(conv(x)), torch.nn.functional.conv2d(x, weight, bias, padding=1, groups=2), atol=1e-5)
    bn_no_stats = torch.nn.BatchNorm2d(16, track_running_stats=False)
    with pytest.raises(ValueError, match='running stats'):
        fold_bn(conv, bn_no_stats)


def test_no_grad_and_caller_model_untouched(inputs):
    model = _model('regnety_002')
    before = copy.deepcopy(model.state_dict())
    x = inputs.clone().requires_grad_(True)
    out = torch_fast_path(model, memory_format='channels_last')(x)
    assert not out.requires_grad and out.grad_fn is None
    assert model.stem.conv.weight.requires_grad  # the caller's model still trains
    assert not any(isinstance(m, FusedConv) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.stem.conv.weight.is_contiguous()  # memory format unchanged


def test_training_mode_model_is_copied_to_eval_with_warning(inputs):
    model = _model('regnetx_002').train()
    with pytest.warns(UserWarning, match='training mode'):
        fast = torch_fast_path(model, memory_format='contiguous')
    assert model.training  # the caller's model keeps its mode
    assert not fast.training
    with torch.no_grad():
        assert max_rel_diff(model.eval()(inputs), fast(inputs)) <= 1e-3
    with pytest.raises(RuntimeError, match='eval-only'):
        fast.train()
    fast.eval()  # allowed


def test_auto_memory_format_writes_nothing_without_a_cache_path(tmp_path, inputs):
    """No hidden state: under a fresh HOME (and cache variables pointing into it) a default call leaves no file."""
    home = tmp_path / 'home'
    home.mkdir()
    code = ('import torch, regzoo\n'
            'torch.manual_seed(0)\n'
            "m = regzoo.create_model('regnetx_002', num_classes=10).eval()\n"
            "fast = regzoo.optimize_for_inference(m, memory_format='auto', example_input=torch.randn(1, 3, 32, 32))\n"
            'print(fast.memory_format)\n')
    env = {**os.environ, 'HOME': str(home), 'XDG_CACHE_HOME': str(home / '.cache'), 'REGZOO_CACHE': ''}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert 'torch.' in out.stdout
    assert [p for p in home.rglob('*')] == []


def test_auto_memory_format_measures_once_then_uses_the_cache(tmp_path, inputs):
    model = _model('regnetx_002')
    cache = tmp_path / 'fmt.json'
    fast = torch_fast_path(model, memory_format='auto', example_input=inputs, cache_path=cache)
    assert fast.memory_format in (torch.channels_last, torch.contiguous_format)
    text = cache.read_text()
    assert 'regnetx_002' not in text and len(text) > 10  # keyed by the architecture's hash
    # a planted entry is obeyed, which proves the second call reads the cache instead of re-measuring
    planted = text.replace('"channels_last"', '"X"').replace('"contiguous"', '"X"')
    for choice, fmt in (('contiguous', torch.contiguous_format), ('channels_last', torch.channels_last)):
        cache.write_text(planted.replace('"X"', f'"{choice}"'))
        again = torch_fast_path(model, memory_format='auto', example_input=inputs, cache_path=cache)
        assert again.memory_format == fmt
    with torch.no_grad():
        assert max_rel_diff(model(inputs), again(inputs)) <= 1e-3


@pytest.mark.parametrize('kwargs, match', [
    (dict(memory_format='nhwc'), 'memory_format'),
    (dict(dtype='float16'), 'dtype'),
])
def test_bad_arguments_raise_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        torch_fast_path(_model('regnetx_002'), **kwargs)
    with pytest.raises(TypeError, match='nn.Module'):
        torch_fast_path('regnetx_002')


def test_inference_model_returns_input_dtype_for_double_input(inputs):
    fast = torch_fast_path(_model('regnetx_002'), memory_format='contiguous')
    assert isinstance(fast, InferenceModel)
    assert fast(inputs.double()).dtype == torch.float64


def test_choose_dtype_rule_both_branches():
    """dtype='auto''s decision from given timings and agreements: bf16 only if native, faster and >= 99 % agreeing."""
    no_native = choose_dtype(False)
    assert no_native.dtype == 'float32' and 'no native bf16' in no_native.reason and no_native.fp32_ms is None
    slower = choose_dtype(True, fp32_ms=10.0, bf16_ms=12.0, agreement=1.0, images=32)
    assert slower.dtype == 'float32' and slower.reason == 'bf16 is not faster (bf16 12.0 ms vs fp32 10.0 ms per batch)'
    disagrees = choose_dtype(True, fp32_ms=10.0, bf16_ms=5.0, agreement=0.98, images=50)
    assert disagrees.dtype == 'float32'
    assert disagrees.reason == 'top-1 agreement with fp32 0.980 on 50 calibration images < 0.99'
    both = choose_dtype(True, fp32_ms=10.0, bf16_ms=10.0, agreement=0.5, images=8)
    assert both.dtype == 'float32' and 'not faster' in both.reason and '0.500' in both.reason
    wins = choose_dtype(True, fp32_ms=10.0, bf16_ms=5.0, agreement=MIN_BF16_AGREEMENT, images=100)  # >= is enough
    assert wins.dtype == 'bfloat16' and '(2.00x)' in wins.reason and '0.990 on 100' in wins.reason
    assert (wins.fp32_ms, wins.bf16_ms, wins.agreement, wins.images) == (10.0, 5.0, MIN_BF16_AGREEMENT, 100)


def test_dtype_auto_real_call(inputs, caplog):
    model = _model('regnetx_002')
    with caplog.at_level('INFO', logger='regzoo.deploy.inference'):
        fast = torch_fast_path(model, dtype='auto', memory_format='channels_last', example_input=inputs)
    choice = fast.dtype_choice
    assert isinstance(choice, DtypeChoice) and f"dtype='auto' chose {choice.dtype}: {choice.reason}" in caplog.text
    assert all(str(p.dtype) == f'torch.{choice.dtype}' for p in fast.parameters())
    with torch.no_grad():
        assert max_rel_diff(model(inputs), fast(inputs)) <= (1e-3 if choice.dtype == 'float32' else 5e-2)
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # this CPU: fp32, said why, nothing timed
        assert choice.dtype == 'float32' and 'no native bf16' in choice.reason and choice.bf16_ms is None
    else:
        assert choice.fp32_ms > 0 and choice.bf16_ms > 0 and choice.images == 32
    explicit = torch_fast_path(model, memory_format='contiguous').dtype_choice
    assert explicit.dtype == 'float32' and explicit.reason == 'requested (dtype=None)'


def test_measure_dtype_times_and_compares_for_real(inputs):
    """The measuring branch, run on any CPU by declaring bf16 native (it then runs on whatever kernels exist)."""
    from regzoo.deploy.benchmarking import fit_probe_head
    model = _model('regnetx_002')
    fit_probe_head(model, *synthetic_batch(64, 64, seed=1), batch_size=32)  # predictions follow the image classes
    images = synthetic_batch(16, 64, seed=3)[0]

    def build(dtype):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # no native bf16 here
            return torch_fast_path(model, dtype=dtype, memory_format='channels_last')

    choice, chosen = measure_dtype(build, inputs, images, in_chans=3, bf16_native=True, repeats=2)
    assert choice.fp32_ms > 0 and choice.bf16_ms > 0 and choice.images == 16
    assert choice.agreement == top1_agreement(build(torch.bfloat16), build(torch.float32), images, 2)
    assert choice == choose_dtype(True, choice.fp32_ms, choice.bf16_ms, choice.agreement, 16)
    assert chosen.dtype == {'float32': torch.float32, 'bfloat16': torch.bfloat16}[choice.dtype]
    assert measure_dtype(build, inputs, images, 3, bf16_native=False) == (choose_dtype(False), None)
    with pytest.raises(ValueError, match="1-channel model needs calibration_images"):
        measure_dtype(build, inputs, None, in_chans=1, bf16_native=True)


@pytest.mark.slow
def test_compile_matches_original(inputs):
    model = _model('regnety_002')
    fast = torch_fast_path(model, memory_format='channels_last', compile=True)
    with torch.no_grad():
        assert max_rel_diff(model(inputs), fast(inputs)) <= 1e-3
