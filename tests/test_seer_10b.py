"""The 10B SEER model (issue 15), and building on a device / in a dtype: ``create_model(..., device=, dtype=)``.

The 10B model (37 GB of fp32) is only ever built on the meta device here; its reference is transformers'
``RegNetModel`` / ``RegNetForImageClassification`` at the config transformers' convert_regnet_seer_10b_to_pytorch.py
pushed (``depths=[2, 7, 17, 1], hidden_sizes=[2020, 4040, 11110, 28280], groups_width=1010``, RegNetY), built on
meta too.
"""
import pytest
import torch
import transformers
from helpers import randomize_bn

import regzoo
from regzoo.models.design import make_stages
from regzoo.zoo.convert import to_regzoo

ARCH = 'regnety_10b'
# convert_regnet_seer_10b_to_pytorch.py's RegNetConfig, and vissl's regnet10B.yaml trunk (w_0 1744, w_a 620.83,
# w_m 2.52, depth 27, group_width 1010, bottleneck_multiplier 1.0 by default, SE 0.25 by default)
HF_10B = dict(depths=[2, 7, 17, 1], hidden_sizes=[2020, 4040, 11110, 28280], groups_width=1010, layer_type='y')
VISSL_10B = dict(depth=27, w0=1744, wa=620.83, wm=2.52, group_size=1010, bottle_ratio=1.0, se_ratio=0.25)


def _hf_meta(cls, **config):
    with torch.device('meta'):
        return cls(transformers.RegNetConfig(**HF_10B, **config))


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_10b_is_vissls_regnet10b_with_transformers_stages():
    cfg = regzoo.MODEL_CFGS[ARCH]
    assert {k: getattr(cfg, k) for k in VISSL_10B} == VISSL_10B
    stages = make_stages(cfg)
    assert [s.width for s in stages] == HF_10B['hidden_sizes'] and [s.depth for s in stages] == HF_10B['depths']
    assert all(s.width // s.groups == HF_10B['groups_width'] for s in stages)
    assert regzoo.is_model('RegNetY-10B') and regzoo.model_entrypoint('RegNetY-10B').__name__ == ARCH


def test_10b_builds_on_meta_with_transformers_parameters():
    """Same parameter count as transformers' models, and the same tensors: HF's state dict, converted to our names,
    has our keys and shapes exactly (classifier and backbone)."""
    model = regzoo.create_model(ARCH, device='meta')
    assert all(t.is_meta for t in model.state_dict().values())
    hf = _hf_meta(transformers.RegNetForImageClassification, num_labels=1000)
    assert _count(model) == _count(hf) == 9_352_215_872
    converted, _ = to_regzoo(hf.state_dict(), 'hf')
    assert {k: v.shape for k, v in converted.items()} == {k: v.shape for k, v in model.state_dict().items()}
    trunk = regzoo.create_model(ARCH, device='meta', num_classes=0)
    assert _count(trunk) == _count(_hf_meta(transformers.RegNetModel))


def test_10b_complexity_is_reported_and_counted_on_the_built_model():
    cx = regzoo.complexity(ARCH)
    # the design math against forward hooks on the model itself (a meta forward: shapes only)
    assert cx == regzoo.measure_complexity(regzoo.create_model(ARCH, device='meta'))
    assert cx['params'] == _count(_hf_meta(transformers.RegNetForImageClassification, num_labels=1000))
    assert regzoo.complexity('RegNetY-10B', img_size=384)['flops'] > cx['flops']


def test_10b_weights_are_the_seer_trunk_and_its_imagenet_fine_tune():
    trunk, fine_tune = regzoo.get_pretrained_cfg(f'{ARCH}.seer'), regzoo.get_pretrained_cfg(ARCH)
    assert fine_tune.tag == 'seer_ft_in1k' and fine_tune.num_classes == 1000 and fine_tune.input_size == (3, 384, 384)
    assert trunk.num_classes == 0 and trunk.label_set is None
    for cfg, repo in ((trunk, 'facebook/regnet-y-10b-seer'), (fine_tune, 'facebook/regnet-y-10b-seer-in1k')):
        assert cfg.hf_hub_id == repo and cfg.hf_hub_filename == 'pytorch_model.bin.index.json'
        assert cfg.url.startswith('https://dl.fbaipublicfiles.com/vissl/model_zoo/') and cfg.source_format == 'classy'
        assert cfg.top1 is None  # no published number in the packaged table
    assert regzoo.list_pretrained(f'{ARCH}*') == [f'{ARCH}.seer', f'{ARCH}.seer_ft_in1k']
    with torch.device('meta'):  # the weight's head size picks the model's
        assert regzoo.create_model(f'{ARCH}.seer').num_classes == 0


# ---------------------------------------------------------------------------------------------- device= / dtype=

@pytest.mark.parametrize('arch', ['regnetx_002', 'regnety_002'])
def test_device_and_dtype_build_the_model_building_there_gives(arch):
    """Built on meta, then given memory on the device and initialised there: the same weights (and the same random
    numbers drawn) as the plain build under the same seed."""
    torch.manual_seed(0)
    plain, after_plain = regzoo.create_model(arch).state_dict(), torch.rand(3)
    torch.manual_seed(0)
    direct, after_direct = regzoo.create_model(arch, device='cpu', dtype=torch.float32).state_dict(), torch.rand(3)
    assert direct.keys() == plain.keys() and all(torch.equal(v, plain[k]) for k, v in direct.items())
    assert torch.equal(after_direct, after_plain)


def test_dtype_builds_in_that_precision():
    for dtype in (torch.bfloat16, 'bfloat16', 'torch.float16'):
        model = regzoo.create_model('regnety_002', dtype=dtype, num_classes=10)
        floats = {v.dtype for v in model.state_dict().values() if v.is_floating_point()}
        assert floats == {torch.bfloat16 if 'bfloat' in str(dtype) else torch.float16}
        assert model.s1.b1.conv1.bn.num_batches_tracked.dtype == torch.long
    model = regzoo.create_model('regnety_002', dtype=torch.float64).eval()
    assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64


def test_checkpoint_loads_into_the_dtype_and_a_new_head(tmp_path):
    torch.manual_seed(0)
    source = randomize_bn(regzoo.create_model('regnety_002')).eval()
    regzoo.save_pretrained(source, tmp_path, format='timm')
    model = regzoo.create_model('regnety_002', checkpoint_path=tmp_path, dtype=torch.bfloat16, num_classes=10)
    expected = source.state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith('head.'):
            assert torch.equal(value, expected[name].to(value.dtype)), name
    fresh = regzoo.create_model('regnety_002', num_classes=10, dtype=torch.bfloat16)  # init_classifier's head
    assert torch.equal(model.head.fc.weight, fresh.head.fc.weight) and model.head.fc.weight.dtype == torch.bfloat16


def test_meta_device_and_bad_values_are_refused_clearly():
    with pytest.raises(ValueError, match=r"regnety_002: device='meta' builds without data, so no weights can be "
                                         r'loaded into it'):
        regzoo.create_model('regnety_002', pretrained=True, device='meta')
    with pytest.raises(ValueError, match=r"device='gpu0' is invalid: a torch device such as 'cpu'"):
        regzoo.create_model('regnety_002', device='gpu0')
    for bad in (torch.int8, 'float17', 3):
        with pytest.raises(ValueError, match=r'dtype=.* is invalid: a floating dtype such as torch.bfloat16'):
            regzoo.create_model('regnety_002', dtype=bad)
    assert all(t.is_meta for t in regzoo.create_model('regnety_002', device='meta').state_dict().values())
