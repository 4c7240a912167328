"""Our RegNet vs timm's: timm's random-init state dict loads strict and gives the same logits."""
import csv
from pathlib import Path

import pytest
import timm
import torch
from helpers import NOT_IN_TIMM, arch_params, max_rel_diff, randomize_bn

import regzoo

TIMM_PARAMS_CSV = Path(__file__).resolve().parents[1] / 'results' / 'reference' / 'timm-params.csv'
TIMM_ARCHS = [n for n in regzoo.list_models() if n in timm.list_models('regnet*')]


def test_every_arch_exists_in_timm():
    # but the 10B SEER model, which timm lacks (tests/test_seer_10b.py checks it against transformers')
    assert TIMM_ARCHS == [n for n in regzoo.list_models() if n not in NOT_IN_TIMM]


def _timm_and_ours(name, **kwargs):
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model(name, **kwargs)).eval()
    ours = regzoo.create_model(name, **kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize('name', arch_params(TIMM_ARCHS))
def test_logits_equal_timm(name):
    ref, ours = _timm_and_ours(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_rel_diff(ref(x), ours(x)) <= 1e-4


@pytest.mark.parametrize('name', ['regnetx_002', 'regnety_004', 'regnetx_004_tv', 'regnety_032'])
@pytest.mark.parametrize('kwargs', [dict(num_classes=10), dict(in_chans=1), dict(output_stride=16)])
def test_logits_equal_timm_with_options(name, kwargs):
    ref, ours = _timm_and_ours(name, **kwargs)
    x = torch.randn(2, kwargs.get('in_chans', 3), 64, 64)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert a.shape == b.shape == (2, kwargs.get('num_classes', 1000))
    assert max_rel_diff(a, b) <= 1e-4


@pytest.mark.parametrize('name', TIMM_ARCHS)
def test_param_count_equals_timm_reference(name):
    expected = {r['model']: int(r['params']) for r in csv.DictReader(TIMM_PARAMS_CSV.open())}
    with torch.device('meta'):  # counts parameters without allocating the SEER giants
        model = regzoo.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected[name]


@pytest.mark.parametrize('timm_name, cfg', [
    # not registered here, but the cfg must express them: pre-activation (V) and linear-out bottle_ratio 4 (Z)
    ('regnetv_040', dict(depth=22, w0=96, wa=31.41, wm=2.24, group_size=64, se_ratio=0.25, preact=True, act='silu')),
    ('regnetz_005', dict(depth=21, w0=16, wa=10.7, wm=2.51, group_size=4, bottle_ratio=4.0, se_ratio=0.25,
                         downsample=None, linear_out=True, num_features=1024, act='silu')),
])
def test_preact_and_linear_out_cfgs_match_timm(timm_name, cfg):
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model(timm_name)).eval()
    ours = regzoo.RegNet(regzoo.RegNetCfg(**cfg)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_rel_diff(ref(x), ours(x)) <= 1e-4


@pytest.mark.parametrize('changes, output_stride', [
    (dict(downsample='avg'), 8), (dict(downsample='avg', preact=True), 16), (dict(downsample=None), 32),
])
def test_dilated_and_shortcut_variants_match_timm(changes, output_stride):
    """The block rule (first-block dilation, avg / no shortcut, pre-activation) against timm's own RegNet."""
    from timm.models.regnet import RegNet as TimmRegNet
    from timm.models.regnet import RegNetCfg as TimmRegNetCfg
    cfg = regzoo.MODEL_CFGS['regnety_002'].replace(**changes)
    fields = {k: v for k, v in vars(cfg).items() if k not in ('act', 'norm', 'stage_widths', 'stage_depths')}
    torch.manual_seed(0)
    ref = randomize_bn(TimmRegNet(TimmRegNetCfg(**fields, act_layer=cfg.act, norm_layer=cfg.norm),
                                  output_stride=output_stride)).eval()
    ours = regzoo.RegNet(cfg, output_stride=output_stride).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_rel_diff(ref(x), ours(x)) <= 1e-4
