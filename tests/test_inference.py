"""optimize_for_inference: outputs equal the original's (and timm's), no grad, eval-only, input checks; benchmark."""
import copy
import warnings

import pytest
import timm
import torch
from helpers import max_rel_diff, randomize_bn

import regzoo
from regzoo.benchmark import fit_probe_head
from regzoo.benchmark import main as benchmark_main
from regzoo.data.synthetic import synthetic_batch
from regzoo.deploy.inference import FusedBottleneck, FusedConv, InferenceModel, fold_bn, optimize_for_inference

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
    fast = optimize_for_inference(model, memory_format=memory_format)
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
        fast = optimize_for_inference(model, memory_format='channels_last', dtype='bfloat16')
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    out = fast(inputs)
    assert out.dtype == torch.float32  # cast back to the input's dtype
    with torch.no_grad():
        assert max_rel_diff(model(inputs), out) <= 5e-2


def test_no_bn_fold_keeps_modules_and_outputs(inputs):
    model = _model('regnety_002')
    fast = optimize_for_inference(model, fuse_bn=False, memory_format='channels_last')
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
        assert max_rel_diff(expected, optimize_for_inference(model, memory_format=fmt)(inputs)) <= 1e-3, kwargs


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
    out = optimize_for_inference(model, memory_format='channels_last')(x)
    assert not out.requires_grad and out.grad_fn is None
    assert model.stem.conv.weight.requires_grad  # the caller's model still trains
    assert not any(isinstance(m, FusedConv) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.stem.conv.weight.is_contiguous()  # memory format unchanged


def test_training_mode_model_is_copied_to_eval_with_warning(inputs):
    model = _model('regnetx_002').train()
    with pytest.warns(UserWarning, match='training mode'):
        fast = optimize_for_inference(model, memory_format='contiguous')
    assert model.training  # the caller's model keeps its mode
    assert not fast.training
    with torch.no_grad():
        assert max_rel_diff(model.eval()(inputs), fast(inputs)) <= 1e-3
    with pytest.raises(RuntimeError, match='eval-only'):
        fast.train()
    fast.eval()  # allowed


def test_auto_memory_format_measures_once_then_uses_the_cache(tmp_path, inputs):
    model = _model('regnetx_002')
    cache = tmp_path / 'fmt.json'
    fast = optimize_for_inference(model, memory_format='auto', example_input=inputs, cache_path=cache)
    assert fast.memory_format in (torch.channels_last, torch.contiguous_format)
    text = cache.read_text()
    assert 'regnetx_002' not in text and len(text) > 10  # keyed by the architecture's hash
    # a planted entry is obeyed, which proves the second call reads the cache instead of re-measuring
    planted = text.replace('"channels_last"', '"X"').replace('"contiguous"', '"X"')
    for choice, fmt in (('contiguous', torch.contiguous_format), ('channels_last', torch.channels_last)):
        cache.write_text(planted.replace('"X"', f'"{choice}"'))
        again = optimize_for_inference(model, memory_format='auto', example_input=inputs, cache_path=cache)
        assert again.memory_format == fmt
    with torch.no_grad():
        assert max_rel_diff(model(inputs), again(inputs)) <= 1e-3


@pytest.mark.parametrize('kwargs, match', [
    (dict(memory_format='nhwc'), 'memory_format'),
    (dict(dtype='float16'), 'dtype'),
])
def test_bad_arguments_raise_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimize_for_inference(_model('regnetx_002'), **kwargs)
    with pytest.raises(TypeError, match='nn.Module'):
        optimize_for_inference('regnetx_002')


def test_inference_model_returns_input_dtype_for_double_input(inputs):
    fast = optimize_for_inference(_model('regnetx_002'), memory_format='contiguous')
    assert isinstance(fast, InferenceModel)
    assert fast(inputs.double()).dtype == torch.float64


def test_benchmark_cli_writes_csv_with_ratios(tmp_path):
    rows = benchmark_main(['--model', 'regnetx_002', '--batch-size', '2', '--img-size', '32', '--repeats', '1',
                           '--warmup', '1', '--latency-repeats', '1', '--dtype', 'bfloat16', '--agreement-images',
                           '4', '--memory-format', 'channels_last', '--out-dir', str(tmp_path)])
    assert {r['variant'] for r in rows} == {'timm', 'regzoo', 'regzoo-opt', 'timm-autocast-bf16', 'regzoo-opt-bf16'}
    assert next(r for r in rows if r['variant'] == 'timm')['ratio_vs_timm'] == 1.0
    agree = next(r for r in rows if r['variant'] == 'regzoo-opt-bf16')['top1_agree_vs_fp32']
    assert 0.0 <= agree <= 1.0
    (csv_file,) = tmp_path.glob('benchmark-*.csv')
    lines = csv_file.read_text().splitlines()
    assert lines[0].startswith('date,host,cpu') and len(lines) == 1 + len(rows)


def test_benchmark_train_mode_and_bad_names(tmp_path):
    rows = benchmark_main(['--model', 'regnetx_002', '--batch-size', '2', '--img-size', '32', '--repeats', '1',
                           '--warmup', '0', '--train', '--out-dir', str(tmp_path)])
    assert {r['variant'] for r in rows} == {'timm', 'regzoo'} and all(r['mode'] == 'train' for r in rows)
    with pytest.raises(ValueError, match='regnety_032'):
        benchmark_main(['--model', 'regnety_03', '--out-dir', str(tmp_path)])


def test_probe_head_makes_predictions_follow_the_generated_classes():
    model = _model('regnetx_002')
    train, train_labels = synthetic_batch(64, 32, seed=1)
    test, test_labels = synthetic_batch(64, 32, seed=2)
    with torch.no_grad():
        before = model(test).argmax(1)
        fit_probe_head(model, train, train_labels, batch_size=32)
        pred = model(test).argmax(1)
    # why the probe is needed: a random net sends the images of 10 classes to fewer classes than that,
    # none of them theirs, so a bf16-vs-fp32 top-1 agreement on it would say little
    assert before.unique().numel() < 10 and (before == test_labels).float().mean() < 0.2
    assert pred.unique().numel() >= 8 and (pred == test_labels).float().mean() > 0.8


@pytest.mark.slow
def test_compile_matches_original(inputs):
    model = _model('regnety_002')
    fast = optimize_for_inference(model, memory_format='channels_last', compile=True)
    with torch.no_grad():
        assert max_rel_diff(model(inputs), fast(inputs)) <= 1e-3
