"""Backbone API: features_only, feature_info, forward_intermediates, prune_intermediate_layers, output_stride.

Reference: timm's own RegNet with random weights (BN stats randomized so every branch matters), moved
into regzoo. Inputs are 64x64 to keep the run short.
"""
import pytest
import timm
import torch
from helpers import randomize_bn

import regzoo
from regzoo.models.features import FeatureListNet

TIMM_ARCHS = [n for n in regzoo.list_models() if n in timm.list_models('regnet*')]
SIZE = 64


def _params(names):
    """Up to 0.8 GFLOPs in the default run; the bigger ones (seconds to build, six builds each) are slow."""
    return [n if int(n.split('_')[1]) <= 8 else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _x(batch: int = 2, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _with_state(build, state: dict) -> torch.nn.Module:
    """``build()``, then every parameter and buffer from ``state`` (strict).

    Big models are built on the meta device: that skips the random init, most of their build time
    (small ones build faster on CPU: meta ops have a fixed Python overhead). Everything compared is loaded.
    """
    if sum(t.numel() for t in state.values()) < 20_000_000:
        model = build()
        model.load_state_dict(state)
        return model.eval()
    with torch.device('meta'):
        model = build()
    model.to_empty(device='cpu').load_state_dict(state)
    return model.eval()


def _timm_and_ours(arch: str, state: dict | None = None, **kwargs):
    """timm's features_only model (randomized unless ``state`` is given) and ours with the same weights."""
    if state is None:
        ref = randomize_bn(timm.create_model(arch, features_only=True, **kwargs)).eval()
    else:
        ref = _with_state(lambda: timm.create_model(arch, features_only=True, **kwargs), state)
    # strict load: our features model has timm's state-dict keys
    ours = _with_state(lambda: regzoo.create_model(arch, features_only=True, **kwargs), ref.state_dict())
    return ref, ours


def _assert_same_features(ref, ours, x):
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert [t.shape for t in got] == [t.shape for t in expected]
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
    for key in ('channels', 'reduction', 'module_name'):
        assert getattr(ours.feature_info, key)() == getattr(ref.feature_info, key)(), key
    # the static description equals what comes out
    assert ours.feature_info.channels() == [t.shape[1] for t in got]
    assert [x.shape[-1] // ours.feature_info.reduction(i) for i in ours.out_indices] == [t.shape[-1] for t in got]


@pytest.mark.parametrize('arch', _params(TIMM_ARCHS))
def test_features_match_timm(arch):
    """Default taps at stride 32, out_indices (1, 3, -1) at output_stride 16, default taps at output_stride 8."""
    x = _x(batch=1)
    ref, ours = _timm_and_ours(arch)
    _assert_same_features(ref, ours, x)
    state = ref.state_dict()  # dilation changes no weight: the same state fits every output_stride
    del ref, ours
    _assert_same_features(*_timm_and_ours(arch, state, out_indices=(1, 3, -1), output_stride=16), x)
    _assert_same_features(*_timm_and_ours(arch, state, output_stride=8), x)


def test_feature_info_without_forward():
    """regnetx_016 taps as used by detection backbones (e.g. BEVDepth: channels 72, 168, 408, 912)."""
    info = regzoo.create_model('regnetx_016', features_only=True, out_indices=(1, 2, 3, 4)).feature_info
    assert info.channels() == [72, 168, 408, 912]
    assert info.reduction() == [4, 8, 16, 32]
    assert info.module_name() == ['s1', 's2', 's3', 's4']
    assert len(info) == 5 and info[0] == dict(num_chs=32, reduction=2, module='stem', index=0)
    assert info.channels(0) == 32 and info.reduction([0, 4]) == [2, 32]
    info16 = regzoo.create_model('regnetx_016', features_only=True, output_stride=16).feature_info
    assert info16.reduction() == [2, 4, 8, 16, 16]


def test_out_indices_order_and_negatives():
    ref = randomize_bn(regzoo.create_model('regnety_002')).eval()
    with torch.no_grad():
        _, every = ref.forward_intermediates(_x())
    for out_indices, taps in [((3, 1), [3, 1]), ((-1, 0), [4, 0]), ((4, -4, 2), [4, 1, 2]), (2, [3, 4])]:
        net = FeatureListNet(ref, out_indices).eval()
        assert net.out_indices == taps and net.feature_info.out_indices == tuple(taps)
        assert net.feature_info.channels() == [ref.feature_info[i]['num_chs'] for i in taps]
        with torch.no_grad():
            got = net(_x())
        assert len(got) == len(taps)
        for g, i in zip(got, taps):
            torch.testing.assert_close(g, every[i], rtol=0, atol=0)
    # only the trunk up to the deepest tap is kept
    assert [n for n, _ in FeatureListNet(ref, (1, 0)).named_children()] == ['stem', 's1']


@pytest.mark.parametrize('out_indices, error, match', [
    ((5,), ValueError, r'index 5 is out of range; valid indices are 0\.\.4 \(or -5\.\.-1'),
    ((-7,), ValueError, r'index -7 is out of range; valid indices are 0\.\.4'),
    ((1, 100), ValueError, r'index 100 is out of range'),
    ((4, -1), ValueError, r'names a tap more than once'),
    ((), ValueError, r'is empty'),
    (6, ValueError, r'last n taps needs 1 <= n <= 5'),
    ((1.0,), TypeError, r'1\.0 is not an int'),
    ('s1', TypeError, r'expected an int or a sequence of ints'),
])
def test_bad_out_indices(out_indices, error, match):
    with pytest.raises(error, match=match):
        regzoo.create_model('regnetx_002', features_only=True, out_indices=out_indices)


def test_bad_features_kwargs():
    with pytest.raises(ValueError, match=r'output_stride=12 is invalid: must be one of \(8, 16, 32\)'):
        regzoo.create_model('regnetx_002', features_only=True, output_stride=12)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'out_indice'; did you mean 'out_indices'"):
        regzoo.create_model('regnetx_002', features_only=True, out_indice=(1, 2))
    with pytest.raises(ValueError, match=r"feature_cls='hooks' is invalid; accepted: list, hook, dict, getter, fx"):
        regzoo.create_model('regnetx_002', features_only=True, feature_cls='hooks')  # timm's names are accepted
    with pytest.raises(TypeError, match=r'out_indices is only valid with features_only=True'):
        regzoo.create_model('regnetx_002', out_indices=(1, 2))
    with pytest.raises(ValueError, match=r"output_fmt='NHWC' is invalid"):
        regzoo.create_model('regnetx_002').forward_intermediates(_x(), output_fmt='NHWC')
    with pytest.raises(ValueError, match=r'indices=\(0, 9\): index 9 is out of range'):
        regzoo.create_model('regnetx_002').forward_intermediates(_x(), indices=(0, 9))


def test_features_only_with_checkpoint_path(tmp_path):
    """Weights load into the full model before wrapping: a full classifier checkpoint fits features_only."""
    ref = randomize_bn(timm.create_model('regnety_002', num_classes=10)).eval()
    path = tmp_path / 'regnety_002_ft.pth'
    torch.save(ref.state_dict(), path)
    ours = regzoo.create_model('regnety_002', features_only=True, out_indices=(2, 4), checkpoint_path=str(path))
    with torch.no_grad():
        _, expected = ref.forward_intermediates(_x(), indices=(2, 4))
        got = ours.eval()(_x())
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)


def test_grad_checkpointing_passes_through():
    torch.manual_seed(0)
    net = regzoo.create_model('regnety_002', features_only=True, out_indices=(1, 3)).train()
    calls = []
    # a pre-hook: non-reentrant checkpointing stops the recompute early, before forward hooks would fire
    net.s3.b1.register_forward_pre_hook(lambda *_: calls.append(1))
    x = _x(batch=2, size=32).requires_grad_()

    def grads():
        net.zero_grad()
        x.grad = None
        calls.clear()
        sum(f.square().mean() for f in net(x)).backward()
        return [p.grad.clone() for p in net.parameters()] + [x.grad.clone()], len(calls)

    plain, plain_calls = grads()
    net.set_grad_checkpointing(True)
    assert net.s1.grad_checkpointing and net.s3.grad_checkpointing
    ckpt, ckpt_calls = grads()
    assert (plain_calls, ckpt_calls) == (1, 2)  # the checkpointed block re-runs its forward in backward
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('kwargs', [
    dict(), dict(indices=2), dict(indices=[3, 1]), dict(indices=(0, -1), stop_early=True),
    dict(indices=(1, 2), stop_early=True), dict(indices=[-2], intermediates_only=True), dict(norm=True),
])
def test_forward_intermediates_match_timm(kwargs):
    ref = randomize_bn(timm.create_model('regnety_002')).eval()
    ours = regzoo.create_model('regnety_002').eval()
    ours.load_state_dict(ref.state_dict())
    x = _x()
    with torch.no_grad():
        expected, got = ref.forward_intermediates(x, **kwargs), ours.forward_intermediates(x, **kwargs)
        features = ours.forward_features(x)
    if kwargs.get('intermediates_only'):
        expected, got = (None, expected), (None, got)
    else:
        torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-5)
        if not kwargs.get('stop_early'):
            torch.testing.assert_close(got[0], features, rtol=0, atol=0)
    assert len(got[1]) == len(expected[1])
    for e, g in zip(expected[1], got[1]):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
    if kwargs == {}:  # the deepest tap is the final feature map (no final conv in the registered archs)
        torch.testing.assert_close(got[1][-1], features, rtol=0, atol=0)


@pytest.mark.parametrize('indices, kwargs', [((1, 2), {}), (1, dict(prune_head=False)), ((0, 4), {})])
def test_prune_intermediate_layers_match_timm(indices, kwargs):
    ref = randomize_bn(timm.create_model('regnetx_002')).eval()
    ours = regzoo.create_model('regnetx_002').eval()
    ours.load_state_dict(ref.state_dict())
    assert ours.prune_intermediate_layers(indices, **kwargs) == ref.prune_intermediate_layers(indices, **kwargs)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert (ours.num_features, ours.num_classes) == (ref.num_features, ref.num_classes)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
        _, expected = ref.forward_intermediates(x, indices=indices)
        _, got = ours.forward_intermediates(x, indices=indices)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
    ours.reset_classifier(7, 'avg')  # the head follows the pruned width
    assert ours(x).shape == (2, 7)


def test_features_scripted():
    net = randomize_bn(regzoo.create_model('regnetx_002', features_only=True, out_indices=(3, 0))).eval()
    scripted = torch.jit.script(net)
    with torch.no_grad():
        expected, got = net(_x()), scripted(_x())
    assert [t.shape[1] for t in got] == net.feature_info.channels()
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-6)
