"""Hugging Face hub names: HF transformers' facebook/regnet-* repos, ``hf-hub:ORG/REPO`` in timm's and in
transformers' layout, and the explicit-stage RegNetCfg an unmatched HF config builds.

Every repo is laid out in a temporary HF cache from files the reference library writes itself
(transformers' ``save_pretrained``, timm's ``save_for_hf``) for a randomly initialised model; the network is
refused at the socket level and ``HF_HUB_OFFLINE`` is set unless a test says otherwise.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import timm
import torch
import transformers
from helpers import populate_hub_cache, randomize_bn, refuse_network
from timm.models._hub import save_for_hf

import regzoo
from regzoo.data import labels
from regzoo.data.synthetic import synthetic_batch
from regzoo.models.design import RegNetCfg, make_stages
from regzoo.zoo.convert import hf
from regzoo.zoo.fetch import WeightsUnavailableError
from regzoo.zoo.hub_names import matching_arch
from regzoo.zoo.hf_repos import HF_REPOS
from regzoo.zoo.registry import UnknownModelError

ATOL = 1e-5

# transformers' convert_regnet_to_pytorch.py: the RegNetConfig each facebook repo was pushed with (layer_type
# 'y' unless said; 10B: convert_regnet_seer_10b_to_pytorch.py). Its regnet-y-2560-seer(-in1k) entries have no
# source checkpoint there, so no such repo exists.
SCRIPT_CONFIGS = {
    'regnet-x-002': ([1, 1, 4, 7], [24, 56, 152, 368], 8, 'x'),
    'regnet-x-004': ([1, 2, 7, 12], [32, 64, 160, 384], 16, 'x'),
    'regnet-x-006': ([1, 3, 5, 7], [48, 96, 240, 528], 24, 'x'),
    'regnet-x-008': ([1, 3, 7, 5], [64, 128, 288, 672], 16, 'x'),
    'regnet-x-016': ([2, 4, 10, 2], [72, 168, 408, 912], 24, 'x'),
    'regnet-x-032': ([2, 6, 15, 2], [96, 192, 432, 1008], 48, 'x'),
    'regnet-x-040': ([2, 5, 14, 2], [80, 240, 560, 1360], 40, 'x'),
    'regnet-x-064': ([2, 4, 10, 1], [168, 392, 784, 1624], 56, 'x'),
    'regnet-x-080': ([2, 5, 15, 1], [80, 240, 720, 1920], 120, 'x'),
    'regnet-x-120': ([2, 5, 11, 1], [224, 448, 896, 2240], 112, 'x'),
    'regnet-x-160': ([2, 6, 13, 1], [256, 512, 896, 2048], 128, 'x'),
    'regnet-x-320': ([2, 7, 13, 1], [336, 672, 1344, 2520], 168, 'x'),
    'regnet-y-002': ([1, 1, 4, 7], [24, 56, 152, 368], 8, 'y'),
    'regnet-y-004': ([1, 3, 6, 6], [48, 104, 208, 440], 8, 'y'),
    'regnet-y-006': ([1, 3, 7, 4], [48, 112, 256, 608], 16, 'y'),
    'regnet-y-008': ([1, 3, 8, 2], [64, 128, 320, 768], 16, 'y'),
    'regnet-y-016': ([2, 6, 17, 2], [48, 120, 336, 888], 24, 'y'),
    'regnet-y-032': ([2, 5, 13, 1], [72, 216, 576, 1512], 24, 'y'),
    'regnet-y-040': ([2, 6, 12, 2], [128, 192, 512, 1088], 64, 'y'),
    'regnet-y-064': ([2, 7, 14, 2], [144, 288, 576, 1296], 72, 'y'),
    'regnet-y-080': ([2, 4, 10, 1], [168, 448, 896, 2016], 56, 'y'),
    'regnet-y-120': ([2, 5, 11, 1], [224, 448, 896, 2240], 112, 'y'),
    'regnet-y-160': ([2, 4, 11, 1], [224, 448, 1232, 3024], 112, 'y'),
    'regnet-y-320': ([2, 5, 12, 1], [232, 696, 1392, 3712], 232, 'y'),
    **{f'regnet-y-{size}-seer{ft}': config for size, config in (
        ('320', ([2, 5, 12, 1], [232, 696, 1392, 3712], 232, 'y')),
        ('640', ([2, 5, 12, 1], [328, 984, 1968, 4920], 328, 'y')),
        ('1280', ([2, 7, 17, 1], [528, 1056, 2904, 7392], 264, 'y')),
        ('10b', ([2, 7, 17, 1], [2020, 4040, 11110, 28280], 1010, 'y'))) for ft in ('', '-in1k')},
}


def hf_config(repo: str, **kwargs) -> transformers.RegNetConfig:
    depths, widths, groups_width, layer_type = SCRIPT_CONFIGS[repo]
    return transformers.RegNetConfig(depths=depths, hidden_sizes=widths, groups_width=groups_width,
                                     layer_type=layer_type, **kwargs)


def cache_hf_model(cache: Path, repo_id: str, config: transformers.RegNetConfig, seed: int = 0, cls=None):
    """A randomly initialised transformers model (BN statistics too) saved by its own save_pretrained into the
    HF cache as ``repo_id``; returns the model."""
    torch.manual_seed(seed)
    ref = randomize_bn((cls or transformers.RegNetForImageClassification)(config)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        populate_hub_cache(cache, repo_id, {p.name: p.read_bytes() for p in Path(tmp).iterdir()})
    return ref


def cache_timm_model(cache: Path, repo_id: str, model: torch.nn.Module) -> None:
    """``model`` as timm publishes it (timm's own save_for_hf: config.json + model.safetensors) in the HF cache."""
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tmp, safe_serialization=True)
        populate_hub_cache(cache, repo_id, {p.name: p.read_bytes() for p in Path(tmp).iterdir()})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty HF cache, offline, read at call time."""
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setenv('HF_HOME', str(tmp_path))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    return tmp_path / 'hub'


@pytest.fixture
def no_network(monkeypatch):
    return refuse_network(monkeypatch)


@torch.no_grad()
def max_diff(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor) -> float:
    out = ref(x)
    out = out if isinstance(out, torch.Tensor) else out.logits
    return (ours.eval()(x) - out).abs().max().item()


# ---------------------------------------------------------------------------------------------- facebook repos

@pytest.mark.parametrize('name', ['facebook/regnet-x-002', 'hf-hub:facebook/regnet-x-002'])
def test_facebook_repo_loads_like_transformers(name, cache, no_network):
    id2label = {i: f'class number {i}' for i in range(1000)}
    ref = cache_hf_model(cache, 'facebook/regnet-x-002', hf_config('regnet-x-002', id2label=id2label))
    model = regzoo.create_model(name, pretrained=True)
    assert model.arch == 'regnetx_002' and model.pretrained_cfg.hf_hub_id == 'facebook/regnet-x-002'
    assert max_diff(model, ref, synthetic_batch(2, 64)[0]) <= ATOL
    assert model.pretrained_cfg.label_names == tuple(id2label.values())  # the repo's id2label, in index order
    assert no_network == []


def test_facebook_regnet_y_040_equals_regnety_040(cache, no_network):
    """The real repo's config (ImageNet labels): regzoo's regnety_040, the same parameters, the same logits."""
    imagenet = labels.label_descriptions('imagenet-1k')
    ref = cache_hf_model(cache, 'facebook/regnet-y-040', hf_config('regnet-y-040', id2label=dict(enumerate(imagenet))))
    x = synthetic_batch(1, 224)[0]
    for name in ('facebook/regnet-y-040', 'hf-hub:facebook/regnet-y-040'):
        model = regzoo.create_model(name, pretrained=True)
        assert model.arch == 'regnety_040'
        assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
        assert max_diff(model, ref, x) <= ATOL
        # HF's labels are ImageNet-1k's descriptions: the label set itself, with its ids
        assert model.pretrained_cfg.label_set == 'imagenet-1k'
        assert tuple(model.pretrained_cfg.label_descriptions.values()) == imagenet
    assert no_network == []


def test_repo_holding_another_net_is_refused(cache, no_network):
    cache_hf_model(cache, 'facebook/regnet-y-320-seer', hf_config('regnet-x-002'), cls=transformers.RegNetModel)
    with pytest.raises(ValueError, match=r'facebook/regnet-y-320-seer: its config.json describes .* not regnety_320'):
        regzoo.create_model('facebook/regnet-y-320-seer', pretrained=True)
    assert regzoo.get_pretrained_cfg('facebook/regnet-y-320-seer').num_classes == 0  # a SEER trunk: no classifier
    assert no_network == []


@pytest.mark.parametrize('repo', sorted(HF_REPOS))
def test_repo_table_matches_the_conversion_scripts(repo):
    """Each repo's arch has the stages transformers' conversion script pushed it with."""
    arch = HF_REPOS[repo].split('.')[0]
    if arch not in regzoo.MODEL_CFGS:
        pytest.skip(f'{arch} is not registered yet')
    depths, widths, groups_width, layer_type = SCRIPT_CONFIGS[repo.removeprefix('facebook/')]
    cfg = regzoo.MODEL_CFGS[arch]
    stages = make_stages(cfg)
    assert [s.width for s in stages] == widths and [s.depth for s in stages] == depths
    assert [s.groups for s in stages] == [max(1, w // groups_width) for w in widths]
    assert bool(cfg.se_ratio) == (layer_type == 'y')
    assert HF_REPOS[repo] in regzoo.list_pretrained(arch)  # the weight it is a copy of
    cfg = regzoo.get_pretrained_cfg(repo)
    assert cfg.hf_hub_id == repo and cfg.name == HF_REPOS[repo]


def test_every_script_repo_is_in_the_table():
    assert sorted(HF_REPOS) == sorted(f'facebook/{name}' for name in SCRIPT_CONFIGS)


# ---------------------------------------------------------------------------------------------- hf-hub: repos

@pytest.mark.parametrize('kwargs', [{}, dict(num_classes=10, in_chans=1)])
def test_timm_layout_repo(kwargs, cache, no_network):
    """timm's meaning of hf-hub:timm/ARCH.TAG: the config's architecture, head, model_args, pretrained_cfg."""
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model('regnetx_002', **kwargs)).eval()
    cache_timm_model(cache, 'timm/regnetx_002.pycls_in1k', ref)
    model = regzoo.create_model('hf-hub:timm/regnetx_002.pycls_in1k', pretrained=True)
    assert model.arch == 'regnetx_002' and model.pretrained_cfg.tag == 'pycls_in1k'
    assert model.num_classes == ref.num_classes and model.in_chans == kwargs.get('in_chans', 3)
    assert model.pretrained_cfg.hf_hub_id == 'timm/regnetx_002.pycls_in1k'
    assert max_diff(model, ref, torch.randn(2, model.in_chans, 64, 64)) <= ATOL
    assert no_network == []


def test_timm_layout_repo_of_an_unknown_arch(cache, no_network):
    populate_hub_cache(cache, 'someone/resnet', {'config.json': b'{"architecture": "resnet50", "num_classes": 3}'})
    with pytest.raises(UnknownModelError, match="architecture 'resnet50', which is no regzoo model"):
        regzoo.create_model('hf-hub:someone/resnet')


@pytest.mark.parametrize('layer_type, act', [('y', 'relu'), ('x', 'silu')])
def test_unmatched_hf_config_builds_its_explicit_stages(layer_type, act, cache, no_network):
    """No registered arch has these stages (100 channels in 4 groups of 25): built from the config's own."""
    config = transformers.RegNetConfig(hidden_sizes=[48, 100, 216, 432], depths=[1, 2, 3, 2], groups_width=24,
                                       embedding_size=24, layer_type=layer_type, hidden_act=act, num_labels=7)
    ref = cache_hf_model(cache, 'someone/odd-regnet', config)
    model = regzoo.create_model('hf-hub:someone/odd-regnet', pretrained=True)
    assert model.cfg.has_explicit_stages and model.arch == 'hf-hub:someone/odd-regnet'
    assert [s.groups for s in model.stage_specs] == [2, 4, 9, 18]
    assert max_diff(model, ref, synthetic_batch(2, 64)[0]) <= ATOL
    assert regzoo.complexity(model.cfg, num_classes=7)['params'] == sum(p.numel() for p in ref.parameters())
    assert model.pretrained_cfg.label_names is None  # transformers' placeholder names (LABEL_i) name no class
    # and back: saved in HF's layout, transformers reads the same net
    back = transformers.RegNetForImageClassification.from_pretrained(
        regzoo.save_pretrained(model, cache.parent / 'saved', format='hf'))
    assert max_diff(model, back.eval(), synthetic_batch(2, 64)[0]) <= ATOL
    assert no_network == []


def test_hf_config_of_a_registered_arch_builds_that_arch(cache, no_network):
    ref = cache_hf_model(cache, 'someone/tiny', hf_config('regnet-y-002', num_labels=5))
    model = regzoo.create_model('hf-hub:someone/tiny', pretrained=True)
    assert model.arch == 'regnety_002' and not model.cfg.has_explicit_stages
    assert max_diff(model, ref, synthetic_batch(2, 64)[0]) <= ATOL


def test_hf_trunk_repo_has_no_classifier(cache, no_network):
    ref = cache_hf_model(cache, 'someone/trunk', hf_config('regnet-x-002'), cls=transformers.RegNetModel)
    model = regzoo.create_model('hf-hub:someone/trunk', pretrained=True).eval()
    x = synthetic_batch(2, 64)[0]
    assert model.arch == 'regnetx_002' and model.num_classes == 0
    with torch.no_grad():
        assert (model(x) - ref(x).pooler_output.flatten(1)).abs().max() <= ATOL


def test_hf_config_regzoo_cannot_build_says_why(cache):
    config = transformers.RegNetConfig(hidden_sizes=[24, 48], depths=[1, 1], groups_width=8, layer_type='y',
                                       hidden_act='gelu', downsample_in_first_stage=False)
    cache_hf_model(cache, 'someone/gelu-se', config)
    with pytest.raises(ValueError, match=r"someone/gelu-se: .*hidden_act='gelu' with layer_type 'y'.*"
                                         r'downsample_in_first_stage=False'):
        regzoo.create_model('hf-hub:someone/gelu-se')


def test_config_defaults_are_transformers():
    def norm(v):
        return tuple(v) if isinstance(v, list) else v
    defaults = transformers.RegNetConfig()
    assert {k: norm(getattr(defaults, k)) for k in hf.HF_CONFIG_DEFAULTS} == dict(hf.HF_CONFIG_DEFAULTS)


# ---------------------------------------------------------------------------------------------- errors

def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert '\n' not in text
    return text


def test_unknown_facebook_repo_names_close_matches(cache, no_network):
    for name in ('facebook/regnet-y-041', 'hf-hub:facebook/regnet-y-041'):
        with pytest.raises(UnknownModelError) as e:
            regzoo.create_model(name)
        text = one_line(e)
        assert 'did you mean' in text and "'facebook/regnet-y-040'" in text
    with pytest.raises(UnknownModelError, match="write 'hf-hub:timm/regnety_032.ra_in1k'"):
        regzoo.create_model('timm/regnety_032.ra_in1k')
    assert regzoo.is_model('facebook/regnet-y-040') and not regzoo.is_model('facebook/regnet-y-041')
    assert no_network == []


@pytest.mark.parametrize('name, pretrained', [('hf-hub:timm/regnety_032.ra_in1k', False),
                                              ('facebook/regnet-y-040', True)])
def test_repo_not_in_the_cache_offline(name, pretrained, cache, no_network):
    with pytest.raises(WeightsUnavailableError) as e:
        regzoo.create_model(name, pretrained=pretrained)
    text = one_line(e)
    assert name.removeprefix('hf-hub:') in text and 'HF_HUB_OFFLINE' in text and str(cache) in text
    assert no_network == []


def test_online_without_network_fails_fast_and_warm_cache_needs_none(cache, no_network, monkeypatch):
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        pytest.skip('huggingface_hub was imported with HF_HUB_OFFLINE set')
    monkeypatch.delenv('HF_HUB_OFFLINE')
    with pytest.raises(WeightsUnavailableError, match='could not be downloaded') as e:
        regzoo.create_model('hf-hub:timm/regnetx_002.pycls_in1k')
    one_line(e)
    assert no_network  # the one quick probe of the hub host, refused
    no_network.clear()
    cache_timm_model(cache, 'timm/regnetx_002.pycls_in1k', timm.create_model('regnetx_002'))
    regzoo.create_model('hf-hub:timm/regnetx_002.pycls_in1k', pretrained=True)
    assert no_network == []


# ---------------------------------------------------------------------------------------------- explicit stages

def test_explicit_stages_are_validated_and_named():
    cfg = RegNetCfg.from_stages([48, 100], [1, 2], 24, se_ratio=0.25)
    assert cfg.has_explicit_stages and hash(cfg) == hash(RegNetCfg.from_stages((48, 100), (1, 2), 24, se_ratio=0.25))
    assert cfg.replace(stage_depths=[3, 1]).stage_depths == (3, 1)  # a config.json's lists become tuples
    for bad, field in ((dict(stage_widths=[48, 100], stage_depths=[1]), 'stage_depths'),
                       (dict(stage_widths=[48, 0], stage_depths=[1, 1]), 'stage_widths'),
                       (dict(stage_widths=[48, 440], stage_depths=[1, 1]), 'stage_widths'),  # 440 // 24 = 18 groups
                       (dict(stage_widths=[48, 100], stage_depths=None), 'stage_depths'),
                       (dict(stage_widths=None, stage_depths=[1, 2]), 'stage_widths')):
        with pytest.raises(ValueError, match=f'RegNetCfg.{field}='):
            cfg.replace(**bad)


def test_explicit_stages_equal_the_linear_rule_they_spell_out():
    """A registered arch's stages given explicitly: the same net (modules, complexity), matched back to the arch."""
    base = regzoo.MODEL_CFGS['regnety_004']
    stages = make_stages(base)
    cfg = RegNetCfg.from_stages([s.width for s in stages], [s.depth for s in stages], base.group_size, se_ratio=0.25)
    assert make_stages(cfg) == stages and matching_arch(cfg) == 'regnety_004'
    assert regzoo.complexity(cfg) == regzoo.complexity(base)
    assert regzoo.measure_complexity(regzoo.RegNet(cfg), 224) == regzoo.complexity(cfg)
    torch.manual_seed(0)
    ours = regzoo.RegNet(cfg)
    assert ours.state_dict().keys() == regzoo.create_model('regnety_004').state_dict().keys()


def test_hf_folder_by_checkpoint_path_keeps_its_id2label(tmp_path):
    """A transformers folder loaded by path (not by hub name) names its classes from its config's id2label too."""
    config = transformers.RegNetConfig(hidden_sizes=[24, 56, 152, 368], depths=[1, 1, 4, 7], groups_width=8,
                                       layer_type='x', num_labels=3, id2label={0: 'cat', 1: 'dog', 2: 'fox'})
    transformers.RegNetForImageClassification(config).save_pretrained(tmp_path / 'named')
    model = regzoo.create_model('regnetx_002', checkpoint_path=tmp_path / 'named')
    assert model.pretrained_cfg.label_names == ('cat', 'dog', 'fox')
