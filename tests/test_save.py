"""save_pretrained: HF transformers and timm read back what we write, with the same logits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import transformers
from helpers import randomize_bn
from PIL import Image
from safetensors.torch import load_file

import regzoo
from regzoo.data.labels import label_names

ATOL = 1e-4


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _ours(arch: str, **kwargs) -> regzoo.RegNet:
    torch.manual_seed(0)
    return randomize_bn(regzoo.create_model(arch, **kwargs)).eval()


@pytest.mark.parametrize('arch, kwargs', [
    ('regnety_002', dict(num_classes=10)),
    ('regnetx_002', dict(num_classes=10)),
    ('regnetx_004_tv', dict()),            # torchvision rounding: widths HF stores as-is
    ('regnetx_002', dict(act='silu')),     # an X net with another activation: HF's hidden_act
    ('regnety_002', dict(in_chans=1, num_classes=0)),
])
def test_hf_round_trip(arch, kwargs, tmp_path):
    model = _ours(arch, **kwargs)
    out = regzoo.save_pretrained(model, tmp_path / 'hf', format='hf')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors',
                                                'preprocessor_config.json']  # nothing pickled
    ref = transformers.RegNetForImageClassification.from_pretrained(out).eval()
    x = _input()[:, :model.in_chans]
    with torch.no_grad():
        assert (ref(x).logits - model(x)).abs().max().item() <= ATOL
    # and back: the HF directory loads into regzoo through the converter
    again = regzoo.create_model(arch, checkpoint_path=str(out), **kwargs).eval()
    with torch.no_grad():
        assert (again(x) - model(x)).abs().max().item() <= ATOL


def test_hf_config_carries_imagenet_labels(tmp_path):
    # the weight's cfg given (as its weights would set it), random weights: nothing is downloaded
    model = regzoo.create_model('regnety_002', pretrained_cfg=regzoo.get_pretrained_cfg('regnety_002.pycls_in1k'))
    config = json.loads((regzoo.save_pretrained(model.eval(), tmp_path, format='hf') / 'config.json').read_text())
    assert config['id2label']['0'] == 'tench, Tinca tinca' and len(config['id2label']) == 1000
    assert transformers.RegNetConfig.from_pretrained(tmp_path).num_labels == 1000


@pytest.mark.parametrize('kwargs, why', [
    (dict(downsample='avg'), r"downsample='avg'"),
    (dict(output_stride=16), r'output_stride < 32'),
    (dict(linear_out=True), r'linear_out=True'),
    (dict(num_features=512), r'num_features=512'),
    (dict(act='silu'), r"act='silu' with SE"),
    (dict(se_ratio=0.5), r'se_ratio=0.5'),
    (dict(global_pool='max'), r"global_pool='max'"),
])
def test_hf_refuses_what_its_config_cannot_express(kwargs, why, tmp_path):
    model = regzoo.create_model('regnety_002', **kwargs)
    with pytest.raises(ValueError, match=rf"HF transformers RegNetConfig cannot express this model: .*{why}"):
        regzoo.save_pretrained(model, tmp_path, format='hf')
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_bad_arguments(tmp_path):
    model = regzoo.create_model('regnetx_002')
    with pytest.raises(ValueError, match=r"unknown format 'onnx'; valid: hf, timm"):
        regzoo.save_pretrained(model, tmp_path, format='onnx')
    features = regzoo.create_model('regnetx_002', features_only=True)
    with pytest.raises(TypeError, match=r'needs a regzoo\.RegNet, got FeatureListNet'):
        regzoo.save_pretrained(features, tmp_path)


def test_timm_round_trip(tmp_path):
    model = _ours('regnety_002', num_classes=10)
    out = regzoo.save_pretrained(model, tmp_path / 'timm', format='timm')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'regnety_002'
    assert (config['num_classes'], config['num_features']) == (10, 368)
    assert config['pretrained_cfg']['num_classes'] == 10
    assert (config['pretrained_cfg']['first_conv'], config['pretrained_cfg']['classifier']) == ('stem.conv', 'head.fc')
    assert 'model_args' not in config
    assert set(load_file(out / 'model.safetensors')) == set(model.state_dict())
    x = _input()
    with torch.no_grad():
        ours = regzoo.create_model('regnety_002', num_classes=10, checkpoint_path=str(out)).eval()
        assert (ours(x) - model(x)).abs().max().item() <= ATOL
        ref = timm.create_model('regnety_002', pretrained=True, pretrained_cfg_overlay=dict(
            file=str(out / 'model.safetensors'), num_classes=10)).eval()
        assert (ref(x) - model(x)).abs().max().item() <= ATOL


def test_timm_config_records_overrides_and_pretrained_cfg(tmp_path):
    model = regzoo.create_model('regnety_002.pycls_in1k', in_chans=1, act='silu')
    config = json.loads((regzoo.save_pretrained(model, tmp_path, format='timm') / 'config.json').read_text())
    assert config['architecture'] == 'regnety_002'
    assert config['model_args'] == {'act': 'silu', 'in_chans': 1}
    cfg = config['pretrained_cfg']
    assert cfg['tag'] == 'pycls_in1k' and cfg['input_size'][0] == 1
    assert not {'hf_hub_id', 'url', 'file', 'sha256'} & set(cfg)  # the copy is not the hub's file
    with pytest.raises(ValueError, match=r"unknown model 'regnety_02'; did you mean"):
        regzoo.save_pretrained(model, tmp_path, format='timm', arch='regnety_02')


def test_in_chans_save_reloads_with_a_one_channel_test_transform(tmp_path):
    """issue 11: the saved cfg's test_input_size (288 px for ra_in1k) and mean/std follow in_chans too, so the
    reloaded model's own eval transform feeds it."""
    model = _ours('regnety_032.ra_in1k', in_chans=1)  # the weight's cfg, random weights: nothing is downloaded
    assert regzoo.get_pretrained_cfg('regnety_032.ra_in1k').test_input_size == (3, 288, 288)
    out = regzoo.save_pretrained(model, tmp_path, format='timm')
    again = regzoo.create_model('regnety_032', checkpoint_path=str(out)).eval()
    config = regzoo.resolve_data_config(model=again)
    assert config.input_size == (1, 288, 288) and len(config.mean) == len(config.std) == 1
    grey = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 320), dtype=np.uint8), 'L')
    x = regzoo.create_transform(config)(grey)[None]
    assert x.shape == (1, 1, 288, 288)
    with torch.no_grad():
        assert (again(x) - model(x)).abs().max().item() <= ATOL


@pytest.mark.parametrize('change', ['num_classes', 'reset_classifier'])
def test_another_head_is_not_the_weight_any_more(change, tmp_path):
    """issue 11: after a head change the saved cfg keeps neither the weight's tag, its label set nor its numbers."""
    if change == 'num_classes':
        model = regzoo.create_model('regnety_002.pycls_in1k', num_classes=10)  # cfg only: nothing is downloaded
    else:
        model = regzoo.create_model('regnety_002.pycls_in1k')
        model.reset_classifier(10)
    config = json.loads((regzoo.save_pretrained(model, tmp_path, format='timm') / 'config.json').read_text())
    cfg = config['pretrained_cfg']  # timm's keys: a missing tag is no key, label names stand at the top level
    assert cfg['num_classes'] == 10 and 'tag' not in cfg and 'label_names' not in config
    again = regzoo.create_model('regnety_002', checkpoint_path=str(tmp_path))
    assert (again.pretrained_cfg.tag, again.pretrained_cfg.label_set, again.num_classes) == ('', None, 10)


def test_the_same_head_keeps_the_weight(tmp_path):
    weight = regzoo.get_pretrained_cfg('regnety_002.pycls_in1k')
    model = regzoo.create_model(weight.name)
    model.pretrained_cfg = weight  # as if its weights were loaded (no download in the tests)
    config = json.loads((regzoo.save_pretrained(model, tmp_path, format='timm') / 'config.json').read_text())
    assert config['pretrained_cfg']['tag'] == weight.tag
    assert config['label_names'] == list(label_names(weight.label_set))
    again = regzoo.create_model('regnety_002', checkpoint_path=str(tmp_path)).pretrained_cfg
    assert (again.tag, again.label_set) == (weight.tag, weight.label_set)


@pytest.mark.parametrize('fmt', ['timm', 'hf'])
def test_random_init_claims_no_class_names(fmt, tmp_path):
    """issue 23: random-init weights saved by the user predicted ImageNet labels. A model built without weights
    keeps its weight's eval transform but names no classes, saved or reloaded; predictions are class indices."""
    model = regzoo.create_model('regnetx_002').eval()
    assert model.pretrained_cfg.tag == 'pycls_in1k' and model.pretrained_cfg.label_names is None
    folder = regzoo.save_pretrained(model, tmp_path / fmt, format=fmt)
    config = json.loads((folder / 'config.json').read_text())
    assert 'label_names' not in config and not any('tench' in str(v) for v in config.get('id2label', {}).values())
    again = regzoo.create_model('regnetx_002', checkpoint_path=str(folder)).eval()
    assert again.pretrained_cfg.label_names is None
    image = Image.new('RGB', (64, 64), 'red')
    for m in (model, again):
        (top,) = regzoo.predict(m, image, topk=1)[0]
        assert top.label == str(top.index) and top.name is None


def test_saved_config_is_read_by_timm(tmp_path):
    """The timm-format config.json holds timm's pretrained_cfg keys only, so timm builds from it too."""
    import timm

    model = regzoo.create_model('regnetx_002.pycls_in1k', num_classes=3).eval()
    regzoo.save_pretrained(model, tmp_path, format='timm')
    reference = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reference(x), model(x))


def test_user_registered_arch_saves_and_reloads(tmp_path):
    """save_pretrained(format='timm') of a user-registered RegNet (old main: 'matches no registered architecture',
    or a raw KeyError with arch=) writes its name, and create_model reloads it with equal outputs."""
    from regzoo.zoo.builder import build_regnet
    from regzoo.zoo.registry import REGISTRY

    @regzoo.register_model
    def test_save_user_arch(pretrained: bool = False, **kwargs):
        cfg = regzoo.RegNetCfg(w0=32, wa=20.0, wm=2.5, depth=6, group_size=8, se_ratio=0.25)
        return build_regnet('test_save_user_arch', cfg, pretrained=pretrained, **kwargs)
    try:
        model = regzoo.create_model('test_save_user_arch', num_classes=7).eval()
        regzoo.save_pretrained(model, tmp_path / 'a', format='timm')
        regzoo.save_pretrained(model, tmp_path / 'b', format='timm', arch='test_save_user_arch')
        for out in ('a', 'b'):
            config = json.loads((tmp_path / out / 'config.json').read_text())
            assert config['architecture'] == 'test_save_user_arch' and 'default' not in config['pretrained_cfg']
            reloaded = regzoo.create_model('test_save_user_arch', checkpoint_path=tmp_path / out).eval()
            x = torch.randn(2, 3, 64, 64)
            assert torch.equal(model(x), reloaded(x))
    finally:
        REGISTRY.unregister('test_save_user_arch')


@pytest.mark.parametrize('format', ['hf', 'timm'])
def test_class_names_survive_a_save(format, tmp_path):
    """issue 23: the issue's own model predicts 'cat'..., and so does its saved folder reloaded (was LABEL_0...)."""
    model = _ours('regnetx_002', num_classes=3, pretrained_cfg_overlay=dict(label_names=['cat', 'dog', 'fox']))
    out = regzoo.save_pretrained(model, tmp_path, format=format)
    config = json.loads((out / 'config.json').read_text())
    if format == 'hf':
        assert config['id2label'] == {'0': 'cat', '1': 'dog', '2': 'fox'}
        assert transformers.RegNetConfig.from_pretrained(out).label2id == {'cat': 0, 'dog': 1, 'fox': 2}
    else:
        assert config['label_names'] == ['cat', 'dog', 'fox']
    again = regzoo.create_model('regnetx_002', checkpoint_path=out).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    assert [p.label for p in regzoo.predict(again, image, topk=3)[0]] == \
        [p.label for p in regzoo.predict(model, image, topk=3)[0]]
    assert {p.label for p in regzoo.predict(again, image, topk=3)[0]} == {'cat', 'dog', 'fox'}
