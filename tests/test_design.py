"""Design-space math vs the reference implementations (pycls's and torchvision's own functions)."""
import dataclasses

import pytest
from pycls.models import regnet as pycls_regnet
from torchvision.models.regnet import BlockParams

from regzoo import MODEL_CFGS, RegNetCfg, make_stages
from regzoo.models.design import adjust_block_compatibility, block_specs, block_widths, make_blocks, stage_strides


def _pycls_stages(cfg: RegNetCfg):
    ws, num_stages, _, _ = pycls_regnet.generate_regnet(cfg.wa, cfg.w0, cfg.wm, cfg.depth)
    s_ws, s_ds = pycls_regnet.get_stages_from_blocks(ws, ws)
    s_ws, s_gs = pycls_regnet.adjust_ws_gs_comp(s_ws, [cfg.bottle_ratio] * num_stages, [cfg.group_size] * num_stages)
    return s_ws, s_ds, s_gs


@pytest.mark.parametrize('name', [n for n, c in MODEL_CFGS.items() if not c.group_min_ratio])
def test_stages_equal_pycls(name):
    cfg = MODEL_CFGS[name]
    stages = make_stages(cfg)
    assert ([s.width for s in stages], [s.depth for s in stages], [s.group_size for s in stages]) == _pycls_stages(cfg)
    assert sum(s.depth for s in stages) == cfg.depth


@pytest.mark.parametrize('name', list(MODEL_CFGS))
def test_torchvision_rounding_equals_torchvision(name):
    cfg = MODEL_CFGS[name].replace(group_min_ratio=0.9)
    ref = BlockParams.from_init_params(
        depth=cfg.depth, w_0=cfg.w0, w_a=cfg.wa, w_m=cfg.wm, group_width=cfg.group_size, se_ratio=cfg.se_ratio)
    stages = make_stages(cfg)
    assert [s.width for s in stages] == ref.widths
    assert [s.depth for s in stages] == ref.depths
    assert [s.group_size for s in stages] == ref.group_widths


def test_the_two_roundings_differ_where_published():
    # X-400MF: pycls ends at width 384, torchvision at 400 (../shared/reference/SOURCES.md, disagreement 5)
    assert make_stages(MODEL_CFGS['regnetx_004'])[-1].width == 384
    assert make_stages(MODEL_CFGS['regnetx_004_tv'])[-1].width == 400
    for base in ('regnetx_004', 'regnety_008', 'regnety_080'):
        assert make_stages(MODEL_CFGS[base]) != make_stages(MODEL_CFGS[base + '_tv'])


def test_group_compatibility_with_bottle_ratio_above_one():
    # RegNetZ-style b=4: bottleneck widths are multiples of lcm(g, b) and block widths stay whole
    widths, groups = adjust_block_compatibility([24, 48, 96, 192], [4.0] * 4, [6] * 4)
    assert all(w * 4 % g == 0 and w * 4 % 12 == 0 for w, g in zip(widths, groups))


def test_paper_rule_by_hand():
    # u_j = 24 + 36.44 j; RegNetX-200MF's block widths are 24, 56, 152, 368 with depths 1, 1, 4, 7
    widths = block_widths(36.44, 24, 2.49, 13)
    assert sorted(set(widths)) == [24, 56, 152, 368]
    assert [widths.count(w) for w in (24, 56, 152, 368)] == [1, 1, 4, 7]


def test_strides_and_dilation():
    assert stage_strides(4, 32) == [(2, 1), (2, 1), (2, 1), (2, 1)]
    assert stage_strides(4, 16) == [(2, 1), (2, 1), (2, 1), (1, 2)]
    assert stage_strides(4, 8) == [(2, 1), (2, 1), (1, 2), (1, 4)]
    with pytest.raises(ValueError, match='output_stride=12'):
        stage_strides(4, 12)


@pytest.mark.parametrize('field, value', [
    ('w0', 0), ('w0', 20), ('wa', -1.0), ('wm', 1.0), ('depth', 0), ('group_size', 0), ('bottle_ratio', 0.0),
    ('bottle_ratio', 2.5), ('se_ratio', 1.5), ('group_min_ratio', 1.0), ('stem_width', 0), ('downsample', 'pool'),
    ('act', 'swish'), ('norm', 'layernorm'), ('num_features', -1), ('depth', 2.0),
])
def test_invalid_cfg_names_the_field(field, value):
    with pytest.raises(ValueError, match=f'RegNetCfg.{field}='):
        MODEL_CFGS['regnetx_002'].replace(**{field: value})


def test_cfg_is_frozen_and_rejects_unknown_fields():
    cfg = MODEL_CFGS['regnety_032']
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.w0 = 64
    with pytest.raises(TypeError, match='group_width'):
        cfg.replace(group_width=8)
    with pytest.raises(TypeError):
        dataclasses.replace(cfg, group_width=8)
    assert cfg.replace(se_ratio=0.0).se_ratio == 0.0 and cfg.se_ratio == 0.25


def test_block_rule():
    """First-block stride and dilation, the shortcut kind and the SE width (from the block *input* width)."""
    cfg = MODEL_CFGS['regnety_002']  # stages 24, 56, 152, 368; se_ratio 0.25
    stages = make_stages(cfg, output_stride=8)  # the last two stages dilate (2, then 4) instead of striding
    blocks = make_blocks(stages, cfg.stem_width, cfg.se_ratio, cfg.downsample)
    assert [len(b) for b in blocks] == [s.depth for s in stages]
    s3, s4 = blocks[2], blocks[3]
    # the first block of a dilated stage still sees the previous stage's dilation (1 into s3, 2 into s4)
    assert [(b.stride, b.dilation) for b in s3] == [(1, 1)] + [(1, 2)] * (len(s3) - 1)
    assert [(b.stride, b.dilation) for b in s4] == [(1, 2)] + [(1, 4)] * (len(s4) - 1)
    # a projection where the width, stride or dilation changes, identity elsewhere
    assert [b.shortcut for b in s3] == ['conv1x1'] + ['identity'] * (len(s3) - 1)
    assert blocks[0][0].shortcut == 'conv1x1' and blocks[0][0].in_chs == cfg.stem_width
    assert [b.se_width for b in s4] == [round(152 * 0.25)] + [round(368 * 0.25)] * (len(s4) - 1)
    assert all(b.groups == b.bottleneck_width // stages[1].group_size for b in blocks[1])
    # same width and stride but a new dilation still needs a shortcut; downsample=None means no residual
    same_width = dataclasses.replace(stages[3], width=152)
    assert block_specs(same_width, 152, downsample='avg')[0].shortcut == 'avg'
    assert block_specs(same_width, 152, downsample=None)[0].shortcut is None
    assert block_specs(same_width, 152, downsample=None)[1].shortcut == 'identity'
    assert block_specs(stages[0], 32)[0].se_width is None  # se_ratio 0: no SE
