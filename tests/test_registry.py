"""Registry behaviour: listing, filters, natural sort, aliases, tags, the decorated factories, user
registration and the errors for bad input."""
import contextlib
import inspect
import re
import textwrap

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import regzoo
from regzoo.utils.names import natural_key
from regzoo.zoo.registry import split_model_name_tag
from regzoo.zoo import factories
from regzoo.zoo.cfgs import paper_name
from regzoo.zoo.registry import REGISTRY, Registry


def test_list_models_filters_and_natural_sort():
    ys = regzoo.list_models('regnety*')
    assert ys[0] == 'regnety_002' and ys[-1] == 'regnety_2560'
    assert ys.index('regnety_320') < ys.index('regnety_640') < ys.index('regnety_1280')
    assert len(regzoo.list_models('regnetx_*')) == 13 and len(ys) == 18  # 12 sizes, 2 _tv, 4 SEER-only
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
                  'regnety_2560', 'regnety_10b'):
        assert regzoo.is_model(extra)


def test_tags_are_parsed():
    assert split_model_name_tag('regnety_032.pycls_in1k') == ('regnety_032', 'pycls_in1k')
    assert split_model_name_tag('regnety_032', no_tag=None) == ('regnety_032', None)
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


def test_torchvision_128gf_alias_is_regnety_1280():
    # regression: the torchvision alias list missed 1280, so create_model('regnet_y_128gf') failed
    assert regzoo.is_model('regnet_y_128gf')
    assert regzoo.model_entrypoint('regnet_y_128gf') is regzoo.model_entrypoint('regnety_1280')


@contextlib.contextmanager
def _parameters_on_meta():
    """Parameters land on the meta device (no memory, no init cost) while plain tensors stay on the CPU.

    ``with torch.device('meta')`` cannot build torchvision's RegNets: their width math calls ``.tolist()``
    on a tensor, which a meta tensor cannot give. Moving only the parameters keeps regnet_y_128gf (645 M) cheap.
    """
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, None if param is None else nn.Parameter(param.to('meta'), param.requires_grad))
    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


@pytest.mark.parametrize('name', [n for n in torchvision.models.list_models() if n.startswith('regnet')])
def test_every_torchvision_builder_name_is_torchvisions_network(name):
    """The alias table (cfgs.TORCHVISION_SIZES, the _tv rounding) checked against torchvision's own builders."""
    with _parameters_on_meta():
        ref = torchvision.models.get_model(name)
    with torch.device('meta'):
        ours = regzoo.create_model(name)
    assert ours.arch == REGISTRY.canonical_name(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert sorted(p.shape for p in ours.parameters()) == sorted(p.shape for p in ref.parameters())


def test_alias_plus_tag_splits_to_the_registered_arch():
    # regression: names with dots were only recognised whole, so this split as ('RegNetY-3', '2GF.ra_in1k')
    assert REGISTRY.split('RegNetY-3.2GF.ra_in1k') == ('regnety_032', 'ra_in1k')
    assert REGISTRY.split('RegNetY-3.2GF') == ('regnety_032', None)
    assert REGISTRY.split('regnet_y_3_2gf.tv2_in1k') == ('regnety_032', 'tv2_in1k')
    assert REGISTRY.split('regnety_032.pycls_in1k') == ('regnety_032', 'pycls_in1k')
    assert REGISTRY.split('regnety_03.x') == ('regnety_03', 'x')  # unknown: left as typed for the error
    # timm's split_model_name_tag (the one regzoo has): timm's first-dot split, except after a dotted alias
    for name in ('regnety_032.ra_in1k', 'regnety_032', 'RegNetY-3.ra_in1k', 'a.b.c', 'regnet_y_3_2gf.tv2_in1k'):
        assert split_model_name_tag(name) == timm.models.split_model_name_tag(name)
    assert split_model_name_tag('RegNetY-3.2GF.ra_in1k') == ('RegNetY-3.2GF', 'ra_in1k')
    assert regzoo.is_model('RegNetY-3.2GF.ra_in1k') and not regzoo.is_model('RegNetY-3.ra_in1k')
    assert regzoo.model_entrypoint('RegNetY-3.2GF.ra_in1k') is regzoo.model_entrypoint('regnety_032')
    with torch.device('meta'):  # the name's tag picks the weight cfg; an overlay still applies on top
        model = regzoo.create_model('RegNetY-3.2GF.ra_in1k', pretrained_cfg_overlay=dict(file='/weights.safetensors'))
    assert model.arch == 'regnety_032' and model.pretrained_cfg.name == 'regnety_032.ra_in1k'
    assert model.pretrained_cfg.file == '/weights.safetensors' and model.pretrained_cfg.test_input_size[-1] == 288


def test_canonical_name_of_any_typed_name():
    # regression: validate.py wrote its row for `--model RegNetY-3.2GF` as 'RegNetY-3'
    assert REGISTRY.canonical_name('RegNetY-3.2GF') == 'regnety_032'
    assert REGISTRY.canonical_name('RegNetY-3.2GF.ra_in1k') == 'regnety_032.ra_in1k'
    assert REGISTRY.canonical_name('regnet_y_800mf') == 'regnety_008_tv'  # torchvision's rounding
    assert REGISTRY.canonical_name('regnetx_002') == 'regnetx_002'
    with pytest.raises(ValueError, match="unknown model 'RegNetY-3'.*did you mean"):
        REGISTRY.canonical_name('RegNetY-3')


_DOC = re.compile(  # 'RegNetY-3.2GF: 3.18 GFLOPs, 19.4 M params.' (a _tv arch adds ', <rounding note>' after the name;
    # SEER's 10B model is named by its parameters: 'RegNetY-10B')
    r'(?P<paper>RegNet[XY]-(?:[\d.]+[MG]F|\d+B))(, [^:]+)?: (?P<gflops>[\d.]+) GFLOPs, (?P<params>[\d.]+) M params\.')


@pytest.mark.parametrize('arch', regzoo.list_models())
def test_every_arch_has_a_decorated_factory_whose_docstring_is_true(arch):
    fn = regzoo.model_entrypoint(arch)
    assert fn.__name__ == arch and fn.__module__ == 'regzoo.zoo.factories'
    signature = f'def {arch}(pretrained: bool = False, **kwargs) -> RegNet:'
    assert inspect.getsource(fn).startswith(f'@register_model\n{signature}')  # written out, so grep finds it
    doc = _DOC.fullmatch(fn.__doc__)
    assert doc, f'{arch} docstring {fn.__doc__!r} is not "<paper name>: <G> GFLOPs, <P> M params."'
    cx = regzoo.complexity(arch)
    assert doc['paper'] == paper_name(arch.removesuffix('_tv'))
    assert doc['gflops'] == f'{cx["flops"] / 1e9:.2f}' and doc['params'] == f'{cx["params"] / 1e6:.1f}'


def _code_block(doc: str) -> str:
    """The indented literal block that follows the first '::' of a docstring."""
    lines = []
    for line in doc.split('::\n', 1)[1].splitlines():
        if line and not line.startswith('    '):
            break
        lines.append(line)
    return textwrap.dedent('\n'.join(lines)).strip() + '\n'


def test_user_registers_a_regnet_as_the_factories_docstring_shows():
    example = _code_block(factories.__doc__)
    assert example.startswith('from regzoo import') and '@register_model' in example
    name = re.search(r'def (\w+)\(', example)[1]
    assert not regzoo.is_model(name)
    try:
        exec(example, {})  # the documented example itself, so the docs cannot drift from what works
        model = regzoo.create_model(name, num_classes=10)
        assert isinstance(model, regzoo.RegNet) and model.arch == name and model.num_classes == 10
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
        assert name in regzoo.list_models() and regzoo.model_entrypoint(name).__name__ == name
        with pytest.raises(ValueError, match=f"a model named '{name}' is already registered"):
            exec(example, {})
    finally:  # the registry is process-wide: leave it as other tests expect it
        if name in REGISTRY.names():
            REGISTRY.unregister(name)
    assert not regzoo.is_model(name) and name not in regzoo.list_models()


def test_unregister_removes_the_arch_and_its_aliases():
    registry = Registry()

    def regnet_toy(pretrained=False, **kwargs):
        return torch.nn.Identity()
    registry.register(regnet_toy)
    registry.register_alias('RegNetToy', 'regnet_toy')
    registry.unregister('regnet_toy')
    assert registry.names() == [] and registry.aliases() == {}
    with pytest.raises(ValueError, match="no architecture named 'RegNetToy' is registered"):
        registry.unregister('RegNetToy')
