"""Model contract, parametrized over every registered arch at 64x64 (timm's test_models.py checks)."""
import copy

import pytest
import torch
from helpers import arch_params, buildable

import regzoo

ARCHS = arch_params(buildable(regzoo.list_models()))  # not the 10B model: 37 GB (tests/test_seer_10b.py, on meta)
SIZE = 64


@pytest.mark.parametrize('name', ARCHS)
def test_forward_shape_no_nan_and_features(name):
    model = regzoo.create_model(name).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        pre = model.forward_head(feats, pre_logits=True)
    assert logits.shape == (2, 1000) and not torch.isnan(logits).any()
    assert feats.shape[1] == model.num_features == pre.shape[1] == model.head_hidden_size
    assert feats.shape[-1] == SIZE // 32 and model.feature_info[-1]['reduction'] == 32
    # feature_info describes the real stage outputs
    out = model.stem(x)
    assert out.shape[1] == model.feature_info[0]['num_chs']
    for info in model.feature_info[1:]:
        out = getattr(model, info['module'])(out)
        assert out.shape[1] == info['num_chs'] and out.shape[-1] == SIZE // info['reduction']


@pytest.mark.parametrize('name', ARCHS)
def test_backward_reaches_every_parameter(name):
    model = regzoo.create_model(name, num_classes=42).train()
    out = model(torch.randn(2, 3, SIZE, SIZE))
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize('name', arch_params(['regnetx_002', 'regnety_002', 'regnetx_004_tv', 'regnety_032']))
def test_grad_checkpointing_same_output_and_grads(name):
    torch.manual_seed(0)
    plain = regzoo.create_model(name, num_classes=10, zero_init_last=False).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    assert all(getattr(ckpt, s).grad_checkpointing for s in ckpt.stage_names)
    x = torch.randn(2, 3, SIZE, SIZE)
    a, b = plain(x), ckpt(x)
    torch.testing.assert_close(a, b)
    a.square().mean().backward()
    b.square().mean().backward()
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


@pytest.mark.parametrize('name', ['regnetx_002', 'regnety_004', 'regnety_008_tv'])
def test_reset_classifier(name):
    model = regzoo.create_model(name).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features) and model.num_classes == 0
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    model.reset_classifier(0, '')
    assert model(x).shape == (2, model.num_features, SIZE // 32, SIZE // 32)
    model.reset_classifier(7, 'avgmax')
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(7, '')
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(7, 'mean')


def test_head_init_is_deterministic_on_both_paths():
    # timm #2265: the constructor's head and reset_classifier's head must be initialised the same way
    torch.manual_seed(1)
    a = regzoo.create_model('regnetx_002', num_classes=5)
    torch.manual_seed(2)
    b = regzoo.create_model('regnetx_002')
    b.reset_classifier(5)
    torch.testing.assert_close(a.head.fc.weight, b.head.fc.weight)
    assert a.head.fc.weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert (a.head.fc.bias == 0).all()


@pytest.mark.parametrize('where', ['bfloat16', 'meta_to', 'meta_built'])
def test_head_after_removal_lands_on_the_model_device_and_dtype(where):
    """issue 11: reset_classifier(0) leaves the head without parameters; a later reset_classifier(n) still builds
    it where the model lives and in its dtype, with the same deterministic init."""
    if where == 'meta_built':
        with torch.device('meta'):
            model = regzoo.create_model('regnetx_002')
    else:
        model = regzoo.create_model('regnetx_002')
        model = model.to(torch.bfloat16) if where == 'bfloat16' else model.to('meta')
    model.reset_classifier(0)
    model.reset_classifier(5)
    stem = model.stem.conv.weight
    assert all((p.device, p.dtype) == (stem.device, stem.dtype) for p in model.head.parameters())
    if where == 'bfloat16':
        with torch.no_grad():
            assert model(torch.randn(2, 3, SIZE, SIZE, dtype=torch.bfloat16)).shape == (2, 5)
        fresh = regzoo.create_model('regnetx_002', num_classes=5).head.fc
        torch.testing.assert_close(model.head.fc.weight, fresh.weight.to(torch.bfloat16), rtol=0, atol=0)
    else:
        assert model(torch.empty(2, 3, SIZE, SIZE, device='meta')).shape == (2, 5)


def test_init_statistics_and_zero_init_last():
    model = regzoo.create_model('regnetx_002')
    conv = model.s2.b1.conv2.conv
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.1)
    assert (model.s1.b1.conv3.bn.weight == 0).all()
    assert model.zero_init_last
    plain = regzoo.create_model('regnetx_002', zero_init_last=False)
    assert (plain.s1.b1.conv3.bn.weight == 1).all() and not plain.zero_init_last


def test_attributes_and_drop_path():
    model = regzoo.create_model('regnety_002', in_chans=4, num_classes=3, drop_rate=0.2, drop_path_rate=0.1)
    assert (model.in_chans, model.num_classes, model.drop_rate, model.drop_path_rate) == (4, 3, 0.2, 0.1)
    rates = [b.drop_path.drop_prob for s in model.stage_names for b in getattr(model, s).children()
             if hasattr(b.drop_path, 'drop_prob')]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.1)
    model.train()
    x = torch.randn(4, 4, SIZE, SIZE)
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))  # dropout/drop-path active in training
    model.eval()
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize('name', ['regnetx_002', 'regnety_002'])
def test_output_stride_keeps_resolution(name):
    for os_ in (16, 8):
        model = regzoo.create_model(name, output_stride=os_).eval()
        with torch.no_grad():
            feats = model.forward_features(torch.randn(1, 3, SIZE, SIZE))
        assert feats.shape[-1] == SIZE // os_
        assert model.feature_info[-1]['reduction'] == os_
