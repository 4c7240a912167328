"""issue 12, the API half: timm's idioms on regzoo models, checked against timm itself.

``model.pretrained_cfg`` / ``model.default_cfg`` (always set, read by timm's own ``timm.data``), the timm fields
of ``PretrainedCfg``, ``create_model``'s timm kwargs (``pretrained_cfg``, ``cache_dir``, ``scriptable`` /
``exportable`` / ``no_jit``, ``feature_cls``, ``feature_cfg``), the listing and registry functions with timm's
signatures and semantics, timm's layer-config switches, and ``RuntimeError`` for an unknown tag.
"""
import dataclasses
import inspect

import numpy as np
import pytest
import timm
import timm.data
import timm.layers
import timm.models
import torch
from helpers import NOT_IN_TIMM, cache_timm_weights, randomize_bn
from PIL import Image
from safetensors.torch import save_file

import regzoo

SMALL = 'regnetx_002'
# weights regzoo has and timm does not: torchvision's V1 weights
EXTRA_TAG = '.tv_in1k'


def _image(mode: str = 'RGB', size=(72, 80)) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3) if mode == 'RGB' else size, dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def _timm_meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device('meta'):  # timm's model only for its cfg: nothing allocated
        return timm.create_model(name, **kwargs)


def _without_extras(cfg) -> dict:
    """timm's keys of a cfg dict, without what regzoo adds to timm's data (label names, urls it fills in)."""
    return {k: v for k, v in dict(cfg).items()
            if k not in ('label_names', 'label_descriptions', 'url', 'origin_url', 'paper_ids')}


# ---------------------------------------------------------------------------------------------- pretrained_cfg

@pytest.mark.parametrize('name, kwargs, mode', [
    ('regnety_032', {}, 'RGB'),                         # no weights asked for: the default tag's cfg (as timm)
    ('regnety_032.tv2_in1k', {}, 'RGB'),                # a tagged name
    (SMALL, dict(num_classes=5), 'RGB'),
    (SMALL, dict(in_chans=1), 'L'),
    (SMALL, dict(features_only=True), 'RGB'),
])
def test_timm_data_reads_the_pretrained_cfg(name, kwargs, mode):
    """old main: model.pretrained_cfg was None (or a dataclass without .get): timm.data raised AttributeError."""
    model = regzoo.create_model(name, **kwargs).eval()
    config = timm.data.resolve_data_config({}, model=model)
    assert config == timm.data.resolve_model_data_config(model)
    if kwargs.get('in_chans') == 1:  # the cfg says what the model takes: one channel, one mean and std
        assert config['input_size'] == (1, 224, 224) and len(config['mean']) == len(config['std']) == 1
    else:  # the same eval settings as timm's own model of that name
        assert config == timm.data.resolve_model_data_config(_timm_meta(name, **kwargs))
    x = timm.data.create_transform(**config)(_image(mode)).unsqueeze(0)
    assert x.shape == (1, *config['input_size'])
    with torch.inference_mode():
        out = model(x)
    if kwargs.get('features_only'):
        assert [o.shape[1] for o in out] == model.feature_info.channels()
    else:
        assert out.shape == (1, kwargs.get('num_classes', 1000))


def test_pretrained_cfg_is_always_set_and_default_cfg_is_its_alias():
    """old main: None without weights, and no default_cfg (also not on the features_only wrapper)."""
    model = regzoo.create_model('regnety_032')
    assert model.pretrained_cfg is model.default_cfg
    assert model.pretrained_cfg.tag == timm.models.get_pretrained_cfg('regnety_032').tag == 'ra_in1k'
    assert model.default_cfg['mean'] == timm.data.IMAGENET_DEFAULT_MEAN
    assert model.default_cfg['test_input_size'] == (3, 288, 288)
    features = regzoo.create_model(SMALL, features_only=True)
    assert features.default_cfg is features.pretrained_cfg and features.default_cfg['mean'] == model.default_cfg['mean']
    # as timm's pretrained_cfg_for_features: no num_classes, no classifier
    theirs = _timm_meta(SMALL, features_only=True).pretrained_cfg
    assert 'num_classes' not in features.pretrained_cfg and 'classifier' not in features.pretrained_cfg
    assert set(features.pretrained_cfg) - {'label_names', 'label_descriptions', 'paper_ids'} == set(theirs)
    for feature_cls in ('dict', 'getter'):
        wrapper = regzoo.create_model(SMALL, features_only=True, feature_cls=feature_cls)
        assert wrapper.default_cfg is wrapper.pretrained_cfg and wrapper.pretrained_cfg['input_size'] == (3, 224, 224)


def test_pretrained_cfg_of_an_arch_without_weights_names_the_arch():
    from regzoo.zoo.builder import build_regnet

    @regzoo.register_model
    def test_timm_api_user_arch(pretrained: bool = False, **kwargs):
        cfg = regzoo.RegNetCfg(w0=24, wa=24.0, wm=2.5, depth=4, group_size=8)
        return build_regnet('test_timm_api_user_arch', cfg, pretrained=pretrained, **kwargs)
    try:
        model = regzoo.create_model('test_timm_api_user_arch')
        cfg = model.pretrained_cfg
        assert cfg['architecture'] == 'test_timm_api_user_arch' and 'tag' not in cfg and cfg.label_set is None
        assert timm.data.resolve_model_data_config(model)['input_size'] == (3, 224, 224)
        assert regzoo.get_pretrained_cfg('test_timm_api_user_arch') is None  # as timm: no cfg registered
        with pytest.raises(RuntimeError, match=r'Model architecture \(test_timm_api_user_arch\) has no pretrained cfg'):
            regzoo.get_pretrained_cfg('test_timm_api_user_arch', allow_unregistered=False)
        with pytest.raises(ValueError, match='no pretrained weights'):
            regzoo.create_model('test_timm_api_user_arch', pretrained=True)
        assert regzoo.list_models('test_timm_api_user_arch', include_tags=True) == ['test_timm_api_user_arch']
        assert regzoo.list_models('test_timm_api_user_arch', pretrained=True) == []
        assert 'test_timm_api' in regzoo.list_modules()  # registered from this module, as timm names modules
    finally:
        regzoo.zoo.registry.REGISTRY.unregister('test_timm_api_user_arch')


def test_pretrained_cfg_is_a_mapping_over_timms_keys():
    from regzoo.zoo.pretrained import TIMM_CFG_KEYS

    timm_fields = [f.name for f in dataclasses.fields(timm.models.PretrainedCfg)]
    assert list(TIMM_CFG_KEYS) == timm_fields
    cfg = regzoo.create_model('regnety_032').pretrained_cfg
    theirs = _timm_meta('regnety_032').pretrained_cfg  # timm's model.pretrained_cfg: a dict
    assert set(cfg) <= set(timm_fields) and set(theirs) <= set(cfg)
    assert _without_extras(cfg) == _without_extras(theirs)
    assert dict(cfg) == {k: cfg[k] for k in cfg.keys()} and len(cfg) == len(dict(cfg))
    assert cfg.get('test_input_size') == (3, 288, 288) and cfg.get('min_input_size') is None
    assert 'mean' in cfg and 'min_input_size' not in cfg and 'top1' not in cfg and 'nope' not in cfg
    with pytest.raises(KeyError):
        cfg['top1']  # regzoo's own fields are attributes, not timm keys
    assert cfg.top1 == 82.724
    # timm builds its own cfg from ours, and its to_dict equals ours
    assert timm.models.PretrainedCfg(**dict(cfg)).to_dict() == dict(cfg) == cfg.to_dict()
    assert cfg.to_dict(remove_source=True).keys() == dict(cfg).keys() - {'url', 'hf_hub_id'}
    # dataclass fields stay what they were: frozen, validated, equal by value
    # a random init claims the weight's eval transform but not its class names (issue 23)
    same = regzoo.get_pretrained_cfg('regnety_032').replace(label_set=None)
    assert cfg == same and hash(cfg) == hash(same)
    assert regzoo.get_pretrained_cfg('regnety_032').label_set == 'imagenet-1k'
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.arch = 'x'
    with pytest.raises(TypeError, match='no field'):
        cfg.replace(nope=1)


def test_pretrained_cfg_has_timms_fields():
    """old main: no architecture, fixed_input_size, min_input_size, test_pool_size, label_names, label_descriptions."""
    for name in ('regnety_032.ra_in1k', 'regnety_120.sw_in12k', 'regnetx_002.pycls_in1k', 'regnety_160.swag_ft_in1k'):
        ours, theirs = regzoo.get_pretrained_cfg(name), timm.models.get_pretrained_cfg(name)
        for key in ('architecture', 'tag', 'fixed_input_size', 'min_input_size', 'test_pool_size', 'custom_load',
                    'num_classes', 'input_size', 'test_input_size', 'pool_size', 'first_conv', 'classifier'):
            assert getattr(ours, key, ours.get(key)) == getattr(theirs, key), (name, key)
        assert ours.architecture == ours.arch
    # timm's RegNet cfgs say url='' where there is none (a hub-only weight)
    hub_only = regzoo.get_pretrained_cfg('regnety_120.sw_in12k')
    assert hub_only.url is None and hub_only['url'] == '' == timm.models.get_pretrained_cfg('regnety_120.sw_in12k').url
    # label names and descriptions (timm >= 1.0 fields), from the weight's label set, in timm's types
    in1k = regzoo.get_pretrained_cfg('regnety_032')
    info = timm.data.ImageNetInfo('imagenet-1k')
    assert in1k['label_names'] == tuple(info.label_names()) and len(in1k.label_names) == 1000
    assert in1k['label_descriptions'] == info.label_descriptions(as_dict=True)
    in12k = regzoo.get_pretrained_cfg('regnety_120.sw_in12k')
    assert in12k.label_names == tuple(timm.data.ImageNetInfo('imagenet-12k').label_names())
    seer = regzoo.get_pretrained_cfg('regnety_320.seer')  # a trunk without classifier has no labels
    assert seer.label_names is None and 'label_names' not in seer and seer['num_classes'] == 0


def test_cfg_follows_in_chans_and_keeps_the_weights_num_classes():
    """in_chans: the cfg's input sizes take the model's channels (so timm.data feeds the model; timm keeps 3 and
    its transform does not fit a 1-channel model). num_classes: the cfg describes the weights, as timm's."""
    model = regzoo.create_model('regnety_032', in_chans=1, num_classes=5)
    cfg = model.pretrained_cfg
    assert cfg['input_size'] == (1, 224, 224) and cfg['test_input_size'] == (1, 288, 288)
    assert cfg['first_conv'] == 'stem.conv' == _timm_meta('regnety_032', in_chans=1).pretrained_cfg['first_conv']
    theirs = _timm_meta('regnety_032', num_classes=5).pretrained_cfg
    assert model.pretrained_cfg['num_classes'] == theirs['num_classes'] == 1000 and model.num_classes == 5


# ---------------------------------------------------------------------------------------------- create_model kwargs

def test_create_model_pretrained_cfg_as_a_tag_a_dict_or_a_cfg():
    """old main: TypeError "unexpected keyword argument 'pretrained_cfg'"."""
    assert regzoo.create_model('regnety_032', pretrained_cfg='tv2_in1k').pretrained_cfg.name == 'regnety_032.tv2_in1k'
    # as timm, the argument wins over the name's tag
    ours = regzoo.create_model('regnety_032.ra_in1k', pretrained_cfg='tv2_in1k').pretrained_cfg
    theirs = _timm_meta('regnety_032.ra_in1k', pretrained_cfg='tv2_in1k').pretrained_cfg
    assert ours['tag'] == theirs['tag'] == 'tv2_in1k'
    # a timm cfg dict (timm's keys), a timm PretrainedCfg, a regzoo PretrainedCfg
    timm_cfg = timm.models.get_pretrained_cfg('regnetx_002')
    timm_dict = dict(timm_cfg.to_dict(), input_size=(3, 160, 160), crop_pct=0.9)
    for value in (timm_dict, timm_cfg, regzoo.get_pretrained_cfg('regnetx_002').replace(crop_pct=0.9)):
        cfg = regzoo.create_model(SMALL, pretrained_cfg=value).pretrained_cfg
        assert cfg.arch == SMALL and cfg['hf_hub_id'] == 'timm/regnetx_002.pycls_in1k'
        assert cfg['crop_pct'] == (0.875 if value is timm_cfg else 0.9)
    cfg = regzoo.create_model(SMALL, pretrained_cfg=timm_dict).pretrained_cfg
    assert cfg['input_size'] == (3, 160, 160) and cfg['tag'] == 'pycls_in1k'
    round_trip = regzoo.create_model(SMALL, pretrained_cfg=dict(regzoo.get_pretrained_cfg(SMALL))).pretrained_cfg
    assert dict(round_trip) == dict(regzoo.get_pretrained_cfg(SMALL))  # dict(cfg) round-trips
    assert round_trip.label_set == 'imagenet-1k'  # the label names select the label set
    # the cfg's head size is the model's default, as timm
    assert regzoo.create_model(SMALL, pretrained_cfg=dict(num_classes=7)).num_classes == 7 == \
        timm.create_model(SMALL, pretrained_cfg=dict(num_classes=7)).num_classes
    with pytest.raises(ValueError, match='state_dict'):
        regzoo.create_model(SMALL, pretrained_cfg=dict(state_dict={}))
    with pytest.raises(TypeError, match='no field'):
        regzoo.create_model(SMALL, pretrained_cfg=dict(nope=1))


def test_create_model_loads_weights_named_by_a_pretrained_cfg_dict(tmp_path):
    ref = randomize_bn(timm.create_model(SMALL)).eval()
    save_file(ref.state_dict(), tmp_path / 'w.safetensors')
    model = regzoo.create_model(SMALL, pretrained=True, pretrained_cfg=dict(file=str(tmp_path / 'w.safetensors')))
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_create_model_cache_dir(tmp_path, monkeypatch):
    """old main: TypeError. The weights come from the HF cache given, not from HF_HUB_CACHE."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'elsewhere'))
    ref = randomize_bn(timm.create_model(SMALL)).eval()
    cache_timm_weights(tmp_path / 'cache', ref, 'timm/regnetx_002.pycls_in1k')
    model = regzoo.create_model(SMALL, pretrained=True, cache_dir=tmp_path / 'cache').eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    with pytest.raises(FileNotFoundError, match='elsewhere'):  # without cache_dir: the environment's cache
        regzoo.create_model(SMALL, pretrained=True)


def test_create_model_scriptable_exportable_no_jit_are_accepted():
    """old main: TypeError. regzoo models always script and export, so these choose nothing."""
    model = regzoo.create_model(SMALL, scriptable=True, exportable=True, no_jit=True).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))
    assert regzoo.create_model(SMALL, scriptable=False, exportable=None, no_jit=False) is not None


def _trunk_from(ref: torch.nn.Module, wrapper: torch.nn.Module) -> torch.nn.Module:
    state_dict = ref.state_dict()
    if any(k.startswith('body.') for k in state_dict):
        # timm's hook net keeps the whole model as `body`; regzoo's 'hook' is FeatureListNet (the same taps,
        # and it scripts): its keys are timm's without the prefix, up to the deepest tap
        state_dict = {k[len('body.'):]: v for k, v in state_dict.items()}
        state_dict = {k: v for k, v in state_dict.items() if k in wrapper.state_dict()}
    wrapper.load_state_dict(state_dict)  # strict: every key of the wrapper comes from timm's
    return wrapper.eval()


@pytest.mark.parametrize('feature_cls', ['list', 'hook', 'dict', 'getter', 'fx'])
def test_feature_cls_as_timm(feature_cls):
    """old main: TypeError. Each wrapper gives timm's outputs and timm's state-dict keys for the same taps."""
    kwargs = dict(features_only=True, feature_cls=feature_cls, out_indices=(1, 2, 4))
    ref = randomize_bn(timm.create_model(SMALL, **kwargs)).eval()
    ours = _trunk_from(ref, regzoo.create_model(SMALL, **kwargs))  # strict: the same keys
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, expected = ours(x), ref(x)
    if feature_cls == 'dict':
        assert list(got) == list(expected) == ['1', '2', '4']
        got, expected = list(got.values()), list(expected.values())
    assert len(got) == len(expected) == 3 and all(torch.equal(a, b) for a, b in zip(got, expected))
    assert ours.feature_info.channels() == ref.feature_info.channels()
    if feature_cls in ('list', 'hook', 'dict', 'fx'):  # these script (timm's hook and getter nets do not)
        with torch.no_grad():
            scripted = torch.jit.script(ours)(x)
        scripted = list(scripted.values()) if feature_cls == 'dict' else scripted
        assert all(torch.equal(a, b) for a, b in zip(scripted, got))


def test_feature_cfg():
    """old main: TypeError. feature_cfg keys as timm: out_indices, feature_cls, and those that change nothing."""
    model = regzoo.create_model(SMALL, features_only=True, feature_cfg=dict(out_indices=(1, 3), feature_cls='dict',
                                                                           flatten_sequential=True))
    assert list(model(torch.randn(1, 3, 64, 64))) == ['1', '3']
    # as timm: the out_indices kwarg wins over feature_cfg's
    assert regzoo.create_model(SMALL, features_only=True, out_indices=(2,), feature_cfg=dict(out_indices=(1, 3))
                               ).feature_info.out_indices == (2,)
    keyed = regzoo.create_model(SMALL, features_only=True, feature_cls='dict', feature_cfg=dict(out_map=('a', 'b')),
                                out_indices=(1, 2))
    assert list(keyed(torch.randn(1, 3, 64, 64))) == ['a', 'b']
    with pytest.raises(ValueError, match="output_fmt='NHWC' cannot be honoured"):
        regzoo.create_model(SMALL, features_only=True, feature_cfg=dict(output_fmt='NHWC'))
    with pytest.raises(TypeError, match=r"feature_cfg key\(s\) \['bogus'\] do not apply to FeatureListNet"):
        regzoo.create_model(SMALL, features_only=True, feature_cfg=dict(bogus=1))
    with pytest.raises(TypeError, match='only valid with features_only=True'):
        regzoo.create_model(SMALL, feature_cfg=dict(out_indices=(1,)))
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):  # unknown kwargs: the clear error
        regzoo.create_model(SMALL, nope=1)


# ---------------------------------------------------------------------------------------------- listing, registry

def test_list_pretrained_matches_a_bare_name_to_its_tags():
    """old main: [] for a bare name, and no exclude_filters."""
    assert regzoo.list_pretrained('regnetx_002') == timm.list_pretrained('regnetx_002') == ['regnetx_002.pycls_in1k']
    ours, theirs = regzoo.list_pretrained('regnety_032'), timm.list_pretrained('regnety_032')
    assert [n for n in ours if not n.endswith(EXTRA_TAG)] == theirs
    assert regzoo.list_pretrained('regnety_032', exclude_filters='*tv*') == \
        timm.list_pretrained('regnety_032', exclude_filters='*tv*') == ['regnety_032.pycls_in1k', 'regnety_032.ra_in1k']
    both = ['regnetx_002', 'regnety_002']
    assert regzoo.list_pretrained(both) == timm.list_pretrained(both)


@pytest.mark.parametrize('kwargs', [
    dict(filter='regnety_0*', pretrained=True),
    dict(filter='regnetx_0*', pretrained=True, include_tags=False),
    dict(filter='regnetx_00*', include_tags=True),
    dict(filter='regnetx_00*', name_matches_cfg=True),
    dict(filter='regnetx_00*', include_tags=True, name_matches_cfg=True),
    dict(filter='regnety*', exclude_filters=['*_1280', '*_2560'], pretrained=True),
    dict(filter='regnety_032', pretrained=True),
    dict(module='regnet', filter='regnetx*'),
])
def test_list_models_as_timm(kwargs):
    """old main: no module=, include_tags=, name_matches_cfg=; a bare filter with pretrained=True matched no tags."""
    ours, theirs = regzoo.list_models(**kwargs), timm.list_models(**kwargs)
    ours = [n for n in ours if n.split('.')[0] not in NOT_IN_TIMM]  # the 10B SEER model: not in timm
    timm_archs = set(timm.list_models())
    # regzoo has torchvision V1 weights timm lacks, and timm has archs regzoo lacks (regnetv, regnetz)
    assert [n for n in ours if not n.endswith(EXTRA_TAG)] == [n for n in theirs if n.split('.')[0] in set(
        regzoo.list_models())]
    assert all(n.split('.')[0] in timm_archs for n in ours)


def test_list_modules_and_module_filters():
    assert 'regnet' in regzoo.list_modules() and 'regnet' in timm.list_modules()
    assert set(regzoo.list_models(module='regnet')) - set(NOT_IN_TIMM) <= set(timm.list_models(module='regnet'))
    assert regzoo.list_models(module='regnet') == regzoo.list_models(exclude_filters='test_*')
    assert regzoo.list_models(module='resnet') == []
    assert regzoo.model_entrypoint('regnetx_002', module_filter='regnet') is regzoo.model_entrypoint('regnetx_002')
    for lib in (regzoo, timm.models):
        with pytest.raises(RuntimeError, match=r'Model \(regnetx_002 not found in module resnet'):
            lib.model_entrypoint('regnetx_002', module_filter='resnet')


def test_registry_functions_as_timm():
    assert regzoo.split_model_name_tag('regnetx_002') == timm.models.split_model_name_tag('regnetx_002') == (SMALL, '')
    assert regzoo.split_model_name_tag(SMALL, no_tag=None) == (SMALL, None)
    assert regzoo.split_model_name_tag('regnety_032.ra_in1k') == ('regnety_032', 'ra_in1k')
    assert regzoo.split_model_name_tag('RegNetY-3.2GF.ra_in1k') == ('RegNetY-3.2GF', 'ra_in1k')  # alias kept as typed
    assert regzoo.is_model('regnety_032.ra_in1k') and timm.is_model('regnety_032.ra_in1k')
    assert not regzoo.is_model('regnety_03') and not timm.is_model('regnety_03')
    assert regzoo.model_entrypoint('regnety_032.ra_in1k').__name__ == 'regnety_032'
    for name in ('regnety_032', 'regnety_032.tv2_in1k', 'regnetx_002'):
        assert regzoo.get_pretrained_cfg(name).tag == timm.models.get_pretrained_cfg(name).tag
    for key in ('test_input_size', 'crop_pct', 'hf_hub_id', 'architecture', 'min_input_size', 'nope'):
        assert regzoo.get_pretrained_cfg_value('regnety_032', key) == \
            timm.models.get_pretrained_cfg_value('regnety_032', key), key
    assert regzoo.get_pretrained_cfg_value('regnety_032', 'top1') == 82.724  # regzoo's own fields too
    assert regzoo.get_pretrained_cfg('RegNetY-3.2GF.tv2_in1k').name == 'regnety_032.tv2_in1k'  # aliases resolve
    from regzoo.zoo import registry
    assert registry.is_model_pretrained('regnety_032.ra_in1k') and registry.is_model_pretrained('regnety_032')
    assert not registry.is_model_pretrained('regnety_032.nope')
    ours = registry.get_arch_pretrained_cfgs('regnety_032')
    assert next(iter(ours)) == 'regnety_032.ra_in1k'  # the default first, as timm
    assert set(timm.models.get_arch_pretrained_cfgs('regnety_032')) <= set(ours)


def test_unknown_tag_raises_runtime_error_as_timm():
    """old main: ValueError, where timm raises RuntimeError. The message still lists the valid tags."""
    for call in (lambda lib: lib.create_model('regnetx_002.nope'),
                 lambda lib: lib.create_model('regnetx_002.nope', pretrained=True),
                 lambda lib: lib.create_model('regnetx_002', pretrained_cfg='nope'),
                 lambda lib: (lib.models if lib is timm else lib).get_pretrained_cfg('regnetx_002.nope')):
        with pytest.raises(RuntimeError, match=r'Invalid pretrained tag \(nope\) for regnetx_002'):
            call(timm)
        with pytest.raises(RuntimeError, match=r'Invalid pretrained tag \(nope\) for regnetx_002.*valid tags: pycls'):
            call(regzoo)
    with pytest.raises(ValueError):  # and still a ValueError, for code that caught that
        regzoo.create_model('regnetx_002.nope')
    with pytest.raises(RuntimeError, match=r"unknown model 'regnety_03'.*regnety_032") as unknown_model:
        regzoo.create_model('regnety_03')  # timm: RuntimeError('Unknown model (regnety_03)')
    assert isinstance(unknown_model.value, ValueError)  # as before


def test_layer_config_switches_have_timms_signatures_and_change_nothing():
    """old main: missing. regzoo is always scriptable and exportable, so they are accepted no-ops."""
    for name in ('set_layer_config', 'set_scriptable', 'set_exportable', 'is_scriptable', 'is_exportable'):
        ours, theirs = getattr(regzoo, name), getattr(timm.layers, name)
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), name
    with regzoo.set_layer_config(scriptable=False, exportable=False, no_jit=False):
        assert regzoo.is_scriptable() and regzoo.is_exportable()
        model = regzoo.create_model(SMALL)
    with regzoo.set_scriptable(False), regzoo.set_exportable(False):
        torch.jit.script(model)
    regzoo.set_scriptable(True)  # also callable, as timm's
    assert regzoo.is_scriptable() and regzoo.is_exportable()
