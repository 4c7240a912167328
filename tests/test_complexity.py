"""regzoo.complexity against pycls's published complexity, pycls's own counter, timm's param counts,
torch's FLOP counter and the built model; plus the results table against the registry."""
import csv
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import NOT_IN_TIMM
from torch.utils.flop_counter import FlopCounterMode

import regzoo
from regzoo.analysis.complexity import complexity, measure_complexity
from regzoo.models.design import RegNetCfg

REFERENCE = Path(__file__).resolve().parents[1] / 'results' / 'reference'
REPO = Path(__file__).resolve().parents[1]



def _pycls_published() -> dict[str, dict]:
    """The 24 pycls model-zoo rows: exact params, GFLOPs at pycls's printed 4 decimals, exact acts."""
    out = {}
    with open(REFERENCE / 'published.csv') as f:
        for row in csv.DictReader(f):
            if row['source'].startswith('pycls@'):
                acts = re.search(r'; acts (\d+);', row['notes'])
                out[row['model']] = dict(
                    params=round(float(row['params_m']) * 1e6), gflops=row['gflops'], acts=int(acts[1]))
    return out


PUBLISHED = _pycls_published()
PYCLS_ARCHS = [f'regnet{f}_{s}' for f in 'xy' for s in
               ('002', '004', '006', '008', '016', '032', '040', '064', '080', '120', '160', '320')]


def test_published_table_has_the_24_archs():
    assert sorted(PUBLISHED) == sorted(PYCLS_ARCHS)


@pytest.mark.parametrize('arch', PYCLS_ARCHS)
def test_analytic_equals_pycls_published(arch):
    cx, ref = complexity(arch), PUBLISHED[arch]
    assert cx['params'] == ref['params']
    assert cx['acts'] == ref['acts']
    # pycls prints GFLOPs with 4 decimals; compare at that precision, as the same string
    assert f'{cx["flops"] / 1e9:.4f}' == ref['gflops']


def test_analytic_params_equal_timm_counts_for_every_arch():
    with open(REFERENCE / 'timm-params.csv') as f:
        timm_params = {r['model']: int(r['params']) for r in csv.DictReader(f)}
    # timm has no 10B SEER model: transformers' count is its reference (tests/test_seer_10b.py)
    assert set(regzoo.list_models()) - set(timm_params) == set(NOT_IN_TIMM)
    for arch in regzoo.list_models():
        if arch not in NOT_IN_TIMM:
            assert complexity(arch)['params'] == timm_params[arch], arch


@pytest.mark.parametrize('arch', ['regnetx_002', 'regnety_002', 'regnetx_004_tv', 'regnety_004'])
def test_params_equal_built_model(arch):
    model = regzoo.create_model(arch)
    assert sum(p.numel() for p in model.parameters()) == complexity(arch)['params']


@pytest.mark.slow
@pytest.mark.parametrize('arch', PYCLS_ARCHS)
def test_params_equal_built_model_all_24(arch):
    model = regzoo.create_model(arch)
    assert sum(p.numel() for p in model.parameters()) == complexity(arch)['params']


_BASE = regzoo.MODEL_CFGS['regnety_002']
VARIANTS = {
    'regnetx_002': regzoo.MODEL_CFGS['regnetx_002'],
    'regnety_002': _BASE,
    'regnety_008_tv': regzoo.MODEL_CFGS['regnety_008_tv'],
    'bottle_0.5': _BASE.replace(bottle_ratio=0.5, group_size=8),
    'bottle_4_linear_out': _BASE.replace(bottle_ratio=4, group_size=16, linear_out=True),
    'preact': _BASE.replace(preact=True),
    'avg_downsample': _BASE.replace(downsample='avg'),
    'no_shortcut': _BASE.replace(downsample=None),
    'num_features': _BASE.replace(num_features=256, stem_width=24),
}


@pytest.mark.parametrize('variant', list(VARIANTS))
@pytest.mark.parametrize('img_size', [64, (50, 37)])
def test_measured_equals_analytic(variant, img_size):
    cfg = VARIANTS[variant]
    model = regzoo.RegNet(cfg, num_classes=10)
    assert measure_complexity(model, img_size) == complexity(cfg, img_size, num_classes=10)


@pytest.mark.parametrize('output_stride', [8, 16])
def test_measured_equals_analytic_dilated(output_stride):
    model = regzoo.RegNet(_BASE, num_classes=0, output_stride=output_stride)
    assert measure_complexity(model, 48) == complexity(_BASE, 48, num_classes=0, output_stride=output_stride)


def test_hook_counter_agrees_with_torch_flop_counter():
    """torch counts 2 FLOPs per multiply-add and no bias adds: flops = torch / 2 + bias elements."""
    model = regzoo.create_model('regnety_002', num_classes=10).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    biases = sum(m.bias.numel() for m in model.modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None)
    assert counter.get_total_flops() // 2 + biases == measure_complexity(model, 64)['flops']


@pytest.fixture
def pycls_cfg():
    from pycls.core.config import cfg, reset_cfg
    reset_cfg()
    yield cfg
    reset_cfg()  # pycls's config is a process-wide global


def _pycls_complexity(cfg, regnet_cfg: RegNetCfg, img_size: int):
    import pycls.core.net as net
    from pycls.models.regnet import RegNet as PyclsRegNet
    cfg.MODEL.TYPE, cfg.MODEL.NUM_CLASSES, cfg.TRAIN.IM_SIZE = 'regnet', 1000, img_size
    r = cfg.REGNET
    r.DEPTH, r.W0, r.WA, r.WM = regnet_cfg.depth, regnet_cfg.w0, regnet_cfg.wa, regnet_cfg.wm
    r.GROUP_W, r.BOT_MUL = regnet_cfg.group_size, regnet_cfg.bottle_ratio
    r.SE_ON, r.SE_R = regnet_cfg.se_ratio > 0, regnet_cfg.se_ratio or 0.25
    return net.complexity(PyclsRegNet), sum(p.numel() for p in PyclsRegNet().parameters())


@pytest.mark.parametrize('name', ['regnetx_002', 'regnety_002', 'regnetx_004', 'regnety_016', 'bottle_0.5'])
def test_analytic_equals_pycls_counter(pycls_cfg, name):
    """pycls's own analytic counter and built model, configured in code (its zoo needs the network)."""
    cfg = VARIANTS.get(name) or regzoo.MODEL_CFGS[name]
    for img_size in (224, 50):
        pycls_cx, pycls_params = _pycls_complexity(pycls_cfg, cfg, img_size)
        assert complexity(cfg, img_size) == pycls_cx
        assert pycls_params == pycls_cx['params']


def test_names_aliases_and_tags_resolve():
    ref = complexity('regnety_032')
    assert complexity('RegNetY-3.2GF') == complexity('regnety_032.pycls_in1k') == ref
    assert complexity('regnet_y_800mf') == complexity('regnety_008_tv') != complexity('regnety_008')


def test_bad_input_raises_clearly():
    with pytest.raises(ValueError, match="did you mean 'regnety_032'"):
        complexity('regnety_03')
    with pytest.raises(TypeError, match='model name or a RegNetCfg'):
        complexity(32)
    with pytest.raises(ValueError, match='img_size'):
        complexity('regnetx_002', img_size=0)
    with pytest.raises(ValueError, match='num_classes'):
        complexity('regnetx_002', num_classes=-1)


def _check_table(rows: list[dict]):
    from regzoo.zoo.pretrained import weight_names
    pairs = {(r['arch'], r['tag']) for r in rows}
    assert len(pairs) == len(rows), 'duplicate rows'
    for arch in regzoo.list_models():
        assert any(a == arch for a, _ in pairs), f'{arch} missing'
    for name in weight_names():
        assert tuple(name.split('.', 1)) in pairs, f'{name} missing'
    assert len(rows) == len(weight_names()) + sum(
        not regzoo.list_models(pretrained=True, filter=a) for a in regzoo.list_models())
    for row in rows:
        cx = complexity(row['arch'])
        assert int(row['params']) == cx['params'] and int(row['acts']) == cx['acts']
        assert row['gflops'] == f'{cx["flops"] / 1e9:.4f}'


def test_results_written_cover_registry(tmp_path):
    from regzoo.analysis.tables import write_results
    paths = write_results(tmp_path)
    with open(paths['csv']) as f:
        _check_table(list(csv.DictReader(f)))
    assert paths['png'].read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert paths['md'].read_text().count('\n| regnet') == len(open(paths['csv']).readlines()) - 1


def test_checked_in_results_are_current():
    """results/models.csv in the repo is regenerated (python -m regzoo.tables) whenever weights or archs change."""
    with open(REPO / 'results' / 'models.csv') as f:
        _check_table(list(csv.DictReader(f)))


def test_complexity_takes_dotted_aliases_with_tags_and_user_archs():
    """Every name create_model takes, complexity takes: 'RegNetY-3.2GF.ra_in1k' is regnety_032 (old main raised),
    and a user-registered arch is counted from its own cfg."""
    assert complexity('RegNetY-3.2GF.ra_in1k') == complexity('regnety_032')
    cfg = RegNetCfg(w0=32, wa=20.0, wm=2.5, depth=12, group_size=8)

    @regzoo.register_model
    def test_complexity_user_arch(pretrained: bool = False, **kwargs):
        from regzoo.zoo.builder import build_regnet
        return build_regnet('test_complexity_user_arch', cfg, pretrained=pretrained, **kwargs)
    try:
        assert complexity('test_complexity_user_arch') == complexity(cfg)
    finally:
        regzoo.zoo.registry.REGISTRY.unregister('test_complexity_user_arch')
