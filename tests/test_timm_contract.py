"""timm's model contract, on every registered regzoo arch.

What timm's own tests/test_models.py asks of a timm model, asked here of ours (our code, not a copy of
theirs): forward without NaN; backward reaching every parameter; the default-cfg checks (``input_size``,
``pool_size`` = the feature map at ``input_size``, ``first_conv`` and ``classifier`` naming real modules,
``num_features``, ``head_hidden_size``, ``reset_classifier(0)``, ``forward_head(pre_logits=True)``);
TorchScript; ``features_only`` and ``forward_intermediates``; torch.fx forward and backward (torchvision's
feature extraction, as timm's tests drive it); fx then TorchScript; TorchScript of fx features; and
pretrained weights read from a local HF hub cache in timm's layout (``in_chans=1``, ``num_classes=5/0``,
``features_only``), compared with timm's own model loaded from the same cache. Then the timm RegNetY
model card run with ``regzoo.create_model`` in place of ``timm.create_model``, and timm's optimizer factory
with layer-wise lr decay.

Default run: every arch up to 1.6 GFLOPs (at 224), at 64x64 wherever sizes do not matter; ``-m slow``:
the rest. The shared per-arch model is a module-scoped fixture, so pytest runs one arch's tests together
and builds it once. Above 1.6 GF the cfg checks (at the cfg's full input size) run on the meta device:
they are about shapes and names, and meta tensors propagate shapes without computing or allocating.
regnety_2560 (1.3 B params, 5 GB) gets every eval-mode check; the checks that hold two or three copies
of its weights at once (backward and fx backward with their gradients, train-mode fx on copies, pretrained
loading next to timm's model) are skipped for it, as timm's CI leaves the SEER sizes out of its model tests.
"""
import copy
import math
from collections.abc import Mapping

import pytest
import timm
import timm.data
import timm.optim
import torch
import torch.nn as nn
from helpers import buildable, cache_timm_weights, randomize_bn, refuse_network
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import regzoo
from regzoo.data.synthetic import synthetic_images

MAX_DEFAULT_FLOPS = 1.6e9  # archs above this (at 224) run under -m slow
SIZE = 64  # input side where sizes do not matter
GIANT = 'regnety_2560'


def _arch_params():
    return [n if regzoo.complexity(n)['flops'] <= MAX_DEFAULT_FLOPS else pytest.param(n, marks=pytest.mark.slow)
            for n in buildable(regzoo.list_models())]  # not the 10B model: not in timm, 37 GB


@pytest.fixture(scope='module', params=_arch_params())
def arch(request):
    return request.param


@pytest.fixture(scope='module')
def model(arch):
    """``create_model(arch)`` in eval mode with non-trivial BNs (random affine params and running stats),
    shared by the eval-only checks of one arch; tests must not change it."""
    torch.manual_seed(0)
    return randomize_bn(regzoo.create_model(arch)).eval()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty HF hub cache, offline, every connection refused (and recorded).

    regzoo reads HF_HUB_CACHE / HF_HUB_OFFLINE at call time; timm goes through huggingface_hub, which reads
    them once at import, so its constants are pointed at the same cache too.
    """
    from huggingface_hub import constants

    cache = tmp_path / 'hub'
    cache.mkdir()
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    return cache, refuse_network(monkeypatch)


def _x(batch: int = 1, size: int = SIZE, chans: int = 3, seed: int = 0, device: str = 'cpu') -> torch.Tensor:
    if device == 'meta':
        return torch.empty(batch, chans, size, size, device='meta')
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(seed))


def _skip_giant(arch: str, why: str) -> None:
    """regnety_2560 (1.3 B params, 5 GB) for checks that hold two or three copies of its weights at once."""
    if arch == GIANT:
        pytest.skip(f'{arch}: {why} would hold two or three copies of its 1.3 B parameters (5 GB each)')


def _assert_every_param_has_grad(module: nn.Module, num_params: int) -> None:
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'
    assert sum(p.grad.numel() for p in module.parameters()) == num_params


def _fx_model(model: nn.Module) -> nn.Module:
    """The whole model as torchvision's fx feature extractor returning its last node (timm's tests do this)."""
    train_nodes, eval_nodes = get_graph_node_names(model)
    return create_feature_extractor(model, train_return_nodes=train_nodes[-1:], eval_return_nodes=eval_nodes[-1:])


def _only(outputs: Mapping) -> torch.Tensor:
    (out,) = outputs.values()
    return out


def _features(arch: str, model: nn.Module, **kwargs) -> nn.Module:
    """``create_model(arch, features_only=True, **kwargs)`` holding ``model``'s weights (strict), whatever prefix
    the wrapper puts on the keys. Big ones are built on the meta device: every weight is loaded anyway."""
    meta = sum(p.numel() for p in model.parameters()) > 20_000_000
    with torch.device('meta' if meta else 'cpu'):
        wrapper = regzoo.create_model(arch, features_only=True, **kwargs)
    if meta:
        wrapper = wrapper.to_empty(device='cpu')
    source = model.state_dict()
    state = {}
    for key in wrapper.state_dict():
        found = [key[len(p):] for p in ('', 'model.', 'graph_module.') if key.startswith(p) and key[len(p):] in source]
        assert found, f'{key} names no weight of the model'
        state[key] = source[found[0]]
    wrapper.load_state_dict(state, strict=True)
    return wrapper.eval()


# ----------------------------------------------------------------------------------------- forward, backward

def test_forward(arch, model):
    with torch.no_grad():
        out = model(_x())
    assert out.shape == (1, model.num_classes) and not torch.isnan(out).any()


def test_backward(arch):
    _skip_giant(arch, 'backward')
    model = regzoo.create_model(arch, num_classes=42).train()
    num_params = sum(p.numel() for p in model.parameters())
    out = model(_x(2))
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    out.mean().backward()
    _assert_every_param_has_grad(model, num_params)


# ----------------------------------------------------------------------------------------- default cfg

def _plain(value):
    """Lists as tuples (timm's cfgs mix the two)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def test_default_cfg(arch):
    """timm's default-cfg checks; above 1.6 GF on the meta device (the checks are about shapes and names)."""
    device = 'cpu' if regzoo.complexity(arch)['flops'] <= MAX_DEFAULT_FLOPS else 'meta'
    with torch.device(device):
        model = regzoo.create_model(arch).eval()
    cfg = model.default_cfg
    assert model.pretrained_cfg is cfg or dict(model.pretrained_cfg) == dict(cfg)
    assert isinstance(cfg, Mapping)  # timm code reads cfg['mean'], cfg.get(...), dict(cfg)

    # the cfg is the arch's default weight's, as timm's (no weights asked for)
    ref = timm.models.get_pretrained_cfg(regzoo.get_pretrained_cfg(arch).name).to_dict()
    assert cfg['architecture'] == arch and cfg['tag'] == regzoo.get_pretrained_cfg(arch).tag
    for key in ('input_size', 'pool_size', 'first_conv', 'classifier', 'num_classes', 'mean', 'std', 'crop_pct',
                'interpolation', 'test_input_size'):
        assert _plain(cfg.get(key)) == _plain(ref.get(key)), key
    assert not cfg.get('fixed_input_size') and not cfg.get('min_input_size')

    assert model.num_classes == cfg['num_classes'] and model.num_features > 0 and model.head_hidden_size > 0
    state = model.state_dict()
    first_conv = model.get_submodule(cfg['first_conv'])
    assert isinstance(first_conv, nn.Conv2d) and cfg['first_conv'] + '.weight' in state
    assert first_conv.in_channels == cfg['input_size'][0] == model.in_chans
    classifier = model.get_submodule(cfg['classifier'])
    assert isinstance(classifier, nn.Linear) and cfg['classifier'] + '.weight' in state
    assert classifier is model.get_classifier()
    assert (classifier.in_features, classifier.out_features) == (model.head_hidden_size, cfg['num_classes'])

    # pool_size is the unpooled feature map at input_size; num_features its channels
    x = _x(1, cfg['input_size'][-1], device=device)
    assert cfg['input_size'][-2] == cfg['input_size'][-1]
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
    assert feats.shape == (1, model.num_features, *cfg['pool_size'])
    assert pre.shape == (1, model.head_hidden_size)
    if test_size := cfg.get('test_input_size'):
        with torch.no_grad():
            test_feats = model.forward_features(_x(1, test_size[-1], device=device))
        expected = cfg.get('test_pool_size') or tuple(math.ceil(s / 32) for s in test_size[-2:])
        assert test_feats.shape[-2:] == tuple(expected)

    # no classifier: pooled features of head_hidden_size, the same as pre_logits
    model.reset_classifier(0)
    assert model.num_classes == 0
    with torch.no_grad():
        out = model(x)
    assert out.shape == pre.shape == (1, model.head_hidden_size)
    if device == 'cpu':
        assert torch.equal(out, pre)
    # no classifier and no pooling: the feature map, of pool_size
    model.reset_classifier(0, '')
    with torch.no_grad():
        assert model(x).shape == (1, model.num_features, *cfg['pool_size'])
    with torch.device(device):
        bare = regzoo.create_model(arch, num_classes=0, global_pool='').eval()
    with torch.no_grad():
        assert bare(x).shape == (1, bare.num_features, *cfg['pool_size'])


# ----------------------------------------------------------------------------------------- TorchScript

def test_torchscript(arch, model):
    scripted = torch.jit.script(model)
    x = _x()
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(scripted(x), expected)
        assert torch.equal(scripted.forward_features(x), model.forward_features(x))


# ----------------------------------------------------------------------------------------- backbone features

def test_features_only_equals_forward_intermediates(arch, model):
    x = _x()
    features = _features(arch, model)
    info = features.feature_info
    assert len(info.channels()) == len(model.feature_info) >= 3
    with torch.no_grad():
        maps = features(x)
        final, intermediates = model.forward_intermediates(x)
        only = model.forward_intermediates(x, intermediates_only=True)
        assert torch.equal(final, model.forward_features(x))
    assert len(maps) == len(intermediates) == len(only) == len(info.channels())
    for got, inter, alone, chs, red in zip(maps, intermediates, only, info.channels(), info.reduction()):
        assert got.shape == (1, chs, SIZE // red, SIZE // red) and not torch.isnan(got).any()
        assert torch.equal(got, inter) and torch.equal(got, alone)
    # timm's 'getter' wrapper reads forward_intermediates (the list wrapper's TorchScript: test_features.py)
    del features
    getter = _features(arch, model, feature_cls='getter')
    with torch.no_grad():
        for a, b in zip(maps, getter(x)):
            assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------- torch.fx

def test_fx_forward(arch, model):
    x = _x()
    with torch.inference_mode():
        expected = model(x)
        assert torch.equal(_only(_fx_model(model)(x)), expected)
        assert torch.equal(torch.fx.symbolic_trace(model)(x), expected)


def test_fx_backward(arch):
    _skip_giant(arch, 'fx backward')
    model = regzoo.create_model(arch, num_classes=42).train()
    num_params = sum(p.numel() for p in model.parameters())
    fx_model = _fx_model(model)
    out = _only(fx_model(_x(2)))
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    out.mean().backward()
    _assert_every_param_has_grad(fx_model, num_params)


def test_fx_then_torchscript(arch, model):
    """timm's RegNet passes this; string annotations in the traced forward used to fail ('_torch_Tensor_')."""
    x = _x()
    with torch.inference_mode():
        expected = model(x)
    traced = torch.jit.script(torch.fx.symbolic_trace(model))
    with torch.inference_mode():
        assert torch.equal(traced(x), expected)


def test_torchscript_of_fx_features(arch, model):
    """Stage outputs through torchvision's create_feature_extractor (scripted in eval mode, eager in train mode),
    and timm's ``feature_cls='fx'`` wrapper, scripted."""
    x = _x(2)
    nodes = {'stem': 'stem', 's1': 's1', 's4': 's4'}
    with torch.no_grad():
        taps = model.forward_intermediates(x, indices=[0, 1, 4], intermediates_only=True)
    extractor = create_feature_extractor(model, return_nodes=nodes).eval()
    scripted = torch.jit.script(extractor)
    with torch.no_grad():
        for out in (extractor(x), scripted(x)):
            assert list(out) == list(nodes)
            for got, expected in zip(out.values(), taps):
                assert torch.equal(got, expected)

    fx_features = _features(arch, model, feature_cls='fx')
    with torch.device('meta'):  # timm's other spelling, the same wrapper
        also = regzoo.create_model(arch, features_only=True, feature_cfg={'feature_cls': 'fx'})
    assert type(also) is type(fx_features)
    scripted = torch.jit.script(fx_features)
    with torch.no_grad():
        expected = model.forward_intermediates(x, intermediates_only=True)
        for outs in (fx_features(x), scripted(x)):
            assert isinstance(outs, list) and len(outs) == len(expected)
            for got, exp in zip(outs, expected):
                assert torch.equal(got, exp)

    _skip_giant(arch, 'the train-mode graph (on copies of the model)')
    # train mode: BN uses batch statistics and updates its running stats, so each side gets its own copy
    x = _x(2, seed=1)
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        taps = reference.forward_intermediates(x, indices=[0, 1, 4], intermediates_only=True)
    extractor = create_feature_extractor(copy.deepcopy(model).train(), return_nodes=nodes)
    assert extractor.training
    with torch.no_grad():
        out = extractor(x)
    for got, expected in zip(out.values(), taps):
        assert torch.equal(got, expected)


# ----------------------------------------------------------------------------------------- pretrained, HF cache

def _random_timm(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(timm.create_model(name, **kwargs)).eval()


def _assert_same_state(ours: nn.Module, ref: nn.Module) -> None:
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_pretrained_from_hf_cache(arch, hub):
    """timm's layout (``models--timm--<arch>.<tag>/snapshots/<hash>/{model.safetensors,config.json}``, refs/main)
    with a timm model's random weights; regzoo and timm both read it, offline, and agree exactly."""
    _skip_giant(arch, 'saving and reloading its checkpoint')
    cache, attempts = hub
    name = regzoo.get_pretrained_cfg(arch).name
    cache_timm_weights(cache, _random_timm(name), f'timm/{name}')
    x, grey = _x(2), _x(2, chans=1, seed=1)

    def both(**kwargs):
        ours = regzoo.create_model(arch, pretrained=True, **kwargs).eval()
        ref = timm.create_model(arch, pretrained=True, **kwargs).eval()
        return ours, ref

    ours, ref = both()
    assert ours.pretrained_cfg['hf_hub_id'] == f'timm/{name}' and ours.pretrained_cfg['tag'] == name.split('.')[1]
    _assert_same_state(ours, ref)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))

    ours, ref = both(in_chans=1, num_classes=5)
    assert ours.in_chans == 1 and ours.get_classifier().out_features == 5
    # the trunk (grey first conv included) is loaded as timm loads it; each builds its own new 5-class head
    state, ref_state = ours.state_dict(), ref.state_dict()
    assert list(state) == list(ref_state)
    for key in state:
        if not key.startswith('head.fc.'):
            assert torch.equal(state[key], ref_state[key]), key
    ours.get_classifier().load_state_dict(ref.get_classifier().state_dict())
    with torch.no_grad():
        assert torch.equal(ours(grey), ref(grey))

    ours, ref = both(num_classes=0)
    assert isinstance(ours.get_classifier(), nn.Identity)
    _assert_same_state(ours, ref)
    with torch.no_grad():
        out = ours(x)
        assert out.shape == (2, ours.num_features) and torch.equal(out, ref(x))

    ours, ref = both(features_only=True)
    _assert_same_state(ours, ref)
    with torch.no_grad():
        maps, ref_maps = ours(x), ref(x)
    assert len(maps) == len(ref_maps) == 5
    for a, b in zip(maps, ref_maps):
        assert torch.equal(a, b)
    assert attempts == []


# ----------------------------------------------------------------------------------------- the model card

def test_timm_model_card_runs_with_regzoo(hub):
    """The RegNetY model card's code (huggingface.co/timm/regnety_032.ra_in1k), ``timm.create_model`` replaced by
    ``regzoo.create_model``, timm's own ``timm.data`` for the transform; each result equals timm's own run."""
    cache, attempts = hub
    cache_timm_weights(cache, _random_timm('regnety_032.ra_in1k'), 'timm/regnety_032.ra_in1k')
    img = synthetic_images(1, size=(200, 320), seed=3)[0][0]  # the card opens a downloaded PNG

    def classify(create_model):
        model = create_model('regnety_032.ra_in1k', pretrained=True)
        model = model.eval()

        # get model specific transforms (normalization, resize)
        data_config = timm.data.resolve_model_data_config(model)
        transforms = timm.data.create_transform(**data_config, is_training=False)

        output = model(transforms(img).unsqueeze(0))  # unsqueeze single image into batch of 1

        top5_probabilities, top5_class_indices = torch.topk(output.softmax(dim=1) * 100, k=5)
        assert timm.data.resolve_data_config({}, model=model) == data_config
        return data_config, transforms(img), output, top5_probabilities, top5_class_indices

    def feature_maps(create_model):
        model = create_model('regnety_032.ra_in1k', pretrained=True, features_only=True)
        model = model.eval()

        # get model specific transforms (normalization, resize)
        data_config = timm.data.resolve_model_data_config(model)
        transforms = timm.data.create_transform(**data_config, is_training=False)

        output = model(transforms(img).unsqueeze(0))  # unsqueeze single image into batch of 1

        for o in output:
            # print shape of each feature map in output
            print(o.shape)
        return output

    def embeddings(create_model):
        model = create_model('regnety_032.ra_in1k', pretrained=True, num_classes=0)  # remove classifier nn.Linear
        model = model.eval()

        # get model specific transforms (normalization, resize)
        data_config = timm.data.resolve_model_data_config(model)
        transforms = timm.data.create_transform(**data_config, is_training=False)

        output = model(transforms(img).unsqueeze(0))  # output is (batch_size, num_features) shaped tensor
        pooled = output

        # or equivalently (without needing to set num_classes=0)

        output = model.forward_features(transforms(img).unsqueeze(0))
        # output is unpooled, a (1, 1512, 7, 7) shaped tensor
        unpooled = output

        output = model.forward_head(output, pre_logits=True)
        # output is a (1, num_features) shaped tensor
        return pooled, unpooled, output

    with torch.no_grad():
        ours, ref = classify(regzoo.create_model), classify(timm.create_model)
        assert ours[0] == ref[0] and ours[0]['input_size'] == (3, 224, 224)  # the data config
        assert torch.equal(ours[1], ref[1])  # the transformed image
        assert ours[2].shape == (1, 1000) and torch.equal(ours[2], ref[2])
        assert torch.equal(ours[3], ref[3]) and torch.equal(ours[4], ref[4])

        maps, ref_maps = feature_maps(regzoo.create_model), feature_maps(timm.create_model)
        # the shapes the card lists
        assert [tuple(o.shape) for o in maps] == [(1, 32, 112, 112), (1, 72, 56, 56), (1, 216, 28, 28),
                                                  (1, 576, 14, 14), (1, 1512, 7, 7)]
        for a, b in zip(maps, ref_maps):
            assert torch.equal(a, b)

        pooled, unpooled, pre = embeddings(regzoo.create_model)
        assert pooled.shape == pre.shape == (1, 1512) and unpooled.shape == (1, 1512, 7, 7)
        assert torch.equal(pooled, pre)
        for a, b in zip((pooled, unpooled, pre), embeddings(timm.create_model)):
            assert torch.equal(a, b)
    assert attempts == []


# ----------------------------------------------------------------------------------------- timm.optim

def _lr_scales(model: nn.Module, optimizer) -> dict[str, float]:
    """{parameter name: lr_scale of its group}; fails if a parameter is in no group or in two."""
    names = {id(p): n for n, p in model.named_parameters()}
    scales = {}
    for group in optimizer.param_groups:
        for p in group['params']:
            assert names[id(p)] not in scales, f'{names[id(p)]} is in two groups'
            scales[names[id(p)]] = group['lr_scale']
    assert sorted(scales) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    return scales


@pytest.mark.parametrize('pretrained', [False, True], ids=['scratch', 'pretrained'])
@pytest.mark.parametrize('features_only', [False, True], ids=['classifier', 'features_only'])
def test_layer_decay_optimizer(pretrained, features_only, hub):
    """``timm.optim.create_optimizer_v2(m, 'sgd', layer_decay=0.65)``: the param groups equal those timm makes
    for its own model (per parameter: the same lr_scale), and a step trains."""
    arch = 'regnetx_002'
    if pretrained:
        cache_timm_weights(hub[0], _random_timm('regnetx_002.pycls_in1k'), 'timm/regnetx_002.pycls_in1k')
    ours = regzoo.create_model(arch, pretrained=pretrained, features_only=features_only)
    ref = timm.create_model(arch, pretrained=pretrained, features_only=features_only)

    optimizer = timm.optim.create_optimizer_v2(ours, 'sgd', layer_decay=0.65)
    scales = _lr_scales(ours, optimizer)
    ref_scales = _lr_scales(ref, timm.optim.create_optimizer_v2(ref, 'sgd', layer_decay=0.65))
    if hasattr(ours, 'group_matcher') or not features_only:
        # real layer decay: the stem learns slowest, the last layer at the full rate
        assert scales['stem.conv.weight'] < 1.0 and max(scales.values()) == 1.0
    if not features_only or hasattr(ours, 'group_matcher') == hasattr(ref, 'group_matcher'):
        assert scales == {k: ref_scales[k] for k in scales} and len(scales) == len(ref_scales)

    stem = ours.get_submodule('stem.conv').weight
    before = stem.detach().clone()
    out = ours.train()(_x(2))
    loss = (torch.cat([o.flatten(1) for o in out], 1) if features_only else out).square().mean()
    loss.backward()
    optimizer.step()
    assert not torch.equal(stem, before)
    assert hub[1] == []
