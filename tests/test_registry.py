"""Registry behaviour: listing, filters, natural sort, aliases, tags and the errors for bad input."""
import pytest
import torch
import torchvision

import regzoo
from regzoo.utils.names import natural_key, split_model_name_tag
from regzoo.zoo.registry import Registry


def test_list_models_filters_and_natural_sort():
    ys = regzoo.list_models('regnety*')
    assert ys[0] == 'regnety_002' and ys[-1] == 'regnety_2560'
    assert ys.index('regnety_320') < ys.index('regnety_640') < ys.index('regnety_1280')
    assert len(regzoo.list_models('regnetx_*')) == 13 and len(ys) == 17
    assert regzoo.list_models('*_tv') == ['regnetx_004_tv', 'regnety_008_tv', 'regnety_080_tv']
    assert regzoo.list_models(['regnetx_002', 'regnety_002']) == ['regnetx_002', 'regnety_002']
    assert 'regnety_2560' not in regzoo.list_models('regnety*', exclude_filters=['*_1280', '*_2560'])
    assert sorted(['b10', 'b9', 'a100'], key=natural_key) == ['a100', 'b9', 'b10']


def test_every_size_is_registered():
    sizes = ['002', '004', '006', '008', '016', '032', '040', '064', '080', '120', '160', '320']
    for family in 'xy':
        for size in sizes:
            assert regzoo.is_model(f'regnet{family}_{size}')
    for extra in ('regnetx_004_tv', 'regnety_008_tv', 'regnety_080_tv', 'regnety_640', 'regnety_1280',
                  'regnety_2560'):
        assert regzoo.is_model(extra)


def test_tags_are_parsed():
    assert split_model_name_tag('regnety_032.pycls_in1k') == ('regnety_032', 'pycls_in1k')
    assert split_model_name_tag('regnety_032') == ('regnety_032', None)
    assert regzoo.is_model('regnety_032.ra_in1k')
    assert regzoo.model_entrypoint('regnety_032.ra_in1k').__name__ == 'regnety_032'


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="did you mean 'regnety_032'"):
        regzoo.create_model('regnety_03')
    with pytest.raises(ValueError, match='regnetx_016'):
        regzoo.create_model('regnetx_16')


def test_unknown_kwarg_is_named():
    with pytest.raises(TypeError, match="'foo'"):
        regzoo.create_model('regnety_032', foo=1)
    with pytest.raises(TypeError, match="did you mean 'drop_path_rate'"):
        regzoo.create_model('regnetx_002', drop_path=0.1)


def test_invalid_values_raise_at_construction():
    with pytest.raises(ValueError, match='RegNetCfg.w0'):
        regzoo.create_model('regnetx_002', w0=12)
    with pytest.raises(ValueError, match='num_classes'):
        regzoo.create_model('regnetx_002', num_classes=-1)
    with pytest.raises(ValueError, match='output_stride'):
        regzoo.create_model('regnetx_002', output_stride=12)


def test_cfg_overrides_through_create_model():
    model = regzoo.create_model('regnetx_002', se_ratio=0.25)
    assert model.cfg.se_ratio == 0.25 and hasattr(model.s1.b1.se, 'fc1')


def test_duplicate_registration_raises():
    registry = Registry()

    def regnet_toy(pretrained=False, **kwargs):
        return torch.nn.Identity()
    registry.register(regnet_toy)
    with pytest.raises(ValueError, match='already registered'):
        registry.register(regnet_toy)
    with pytest.raises(ValueError, match='already registered'):
        regzoo.register_model(regzoo.model_entrypoint('regnetx_002'))


@pytest.mark.parametrize('alias, tv_fn', [
    ('regnet_x_400mf', torchvision.models.regnet_x_400mf),   # torchvision rounding -> regnetx_004_tv
    ('regnet_y_800mf', torchvision.models.regnet_y_800mf),   # -> regnety_008_tv
    ('regnet_y_1_6gf', torchvision.models.regnet_y_1_6gf),   # same net in both roundings -> regnety_016
])
def test_torchvision_aliases_build_torchvisions_network(alias, tv_fn):
    ours = regzoo.create_model(alias)
    ref = tv_fn()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_paper_aliases():
    assert regzoo.create_model('RegNetY-3.2GF').arch == 'regnety_032'
    assert regzoo.create_model('RegNetX-200MF').arch == 'regnetx_002'
    assert regzoo.model_entrypoint('RegNetY-8.0GF').__name__ == 'regnety_080'
