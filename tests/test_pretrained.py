"""The pretrained-weight table: schema, parity with timm's default_cfgs and torchvision's weight enums,
the default weights, published metrics (the packaged table against the reference table), and the lookup API."""
import csv
import dataclasses
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pytest
import timm
import torch
import torchvision.models as tvm
from helpers import NOT_IN_TIMM
from timm.models import get_pretrained_cfg as timm_pretrained_cfg

import regzoo
from regzoo.models.regnet import RegNet
from regzoo.utils.names import natural_key
from regzoo.zoo.registry import split_model_name_tag
from regzoo.zoo.cfgs import MODEL_CFGS
from regzoo.zoo.convert import FORMATS
from regzoo.zoo.metrics import load_published, lookup_published
from regzoo.zoo.pretrained import WEIGHTS, PretrainedCfg, url_hash_prefix
from regzoo.zoo.registry import REGISTRY

PUBLISHED_CSV = Path(__file__).resolve().parents[1] / 'results' / 'reference' / 'published.csv'
ARCHS = regzoo.list_models()
TIMM_ARCHS = [a for a in ARCHS if a not in NOT_IN_TIMM]
TIMM_TAGS = [f'{a}.{t}' for a in TIMM_ARCHS for t in timm.models._registry._model_default_cfgs[a].tags]
# the weights of the archs timm lacks: SEER 10B's trunk and fine-tune, from vissl and HF transformers' hub repos
NOT_IN_TIMM_WEIGHTS = ('regnety_10b.seer', 'regnety_10b.seer_ft_in1k')
TV_V1 = {REGISTRY.resolve(n[:-len('_Weights')].lower()): getattr(tvm, n).IMAGENET1K_V1
         for n in dir(tvm) if n.startswith('RegNet_') and hasattr(getattr(tvm, n), 'IMAGENET1K_V1')}
# what timm's cfg dicts and ours share, compared field by field
SHARED_FIELDS = ('num_classes', 'input_size', 'test_input_size', 'pool_size', 'crop_pct', 'test_crop_pct',
                 'crop_mode', 'interpolation', 'mean', 'std', 'first_conv', 'classifier', 'license')


@lru_cache(maxsize=None)
def state_dict_shapes(arch: str) -> dict[str, tuple]:
    with torch.device('meta'):  # shapes only: no memory (regnety_2560 has 1.3 B parameters)
        return {k: tuple(v.shape) for k, v in RegNet(MODEL_CFGS[arch]).state_dict().items()}



def test_every_timm_tag_and_every_torchvision_v1_weight_is_present():
    assert sorted(TIMM_TAGS) == sorted(n for n in WEIGHTS
                                       if not n.endswith('.tv_in1k') and n not in NOT_IN_TIMM_WEIGHTS)
    assert sorted(f'{a}.tv_in1k' for a in TV_V1) == sorted(n for n in WEIGHTS if n.endswith('.tv_in1k'))
    assert sorted(n for n in WEIGHTS if split_model_name_tag(n)[0] in NOT_IN_TIMM) == list(NOT_IN_TIMM_WEIGHTS)
    assert len(TV_V1) == 14 and len(WEIGHTS) == len(TIMM_TAGS) + 14 + len(NOT_IN_TIMM_WEIGHTS)


@pytest.mark.parametrize('name', TIMM_TAGS)
def test_fields_match_timm(name):
    ours, theirs = WEIGHTS[name], timm_pretrained_cfg(name)
    for field in SHARED_FIELDS:
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.hf_hub_id == theirs.hf_hub_id == f'timm/{name}'
    if theirs.url:  # we add the pycls .pyth URLs timm leaves out; where timm has a URL, it is the same one
        assert ours.url == theirs.url
    if theirs.origin_url:
        assert ours.origin_url == theirs.origin_url


@pytest.mark.parametrize('arch', sorted(TV_V1))
def test_tv_in1k_matches_torchvision(arch):
    cfg, weights = WEIGHTS[f'{arch}.tv_in1k'], TV_V1[arch]
    metrics = weights.meta['_metrics']['ImageNet-1K']
    assert cfg.url == weights.url and cfg.hf_hub_id is None and cfg.source_format == 'torchvision'
    assert (cfg.top1, cfg.top5) == (metrics['acc@1'], metrics['acc@5'])
    transform = weights.transforms()
    assert cfg.input_size[1:] == tuple(transform.crop_size) * 2
    assert cfg.crop_pct == transform.crop_size[0] / transform.resize_size[0]
    assert cfg.interpolation == transform.interpolation.value
    assert cfg.num_classes == len(weights.meta['categories'])
    assert weights.url.split('/')[-1].startswith(f"{weights.url.split('/')[-1].split('-')[0]}-{cfg.sha256}")


@pytest.mark.parametrize('name', sorted(WEIGHTS))
def test_schema(name):
    cfg = WEIGHTS[name]
    assert cfg.name == name and cfg.arch in MODEL_CFGS and re.fullmatch(r'[a-z0-9]+(_[a-z0-9]+)*', cfg.tag)
    assert cfg.hf_hub_id or cfg.url, 'no source'
    if cfg.arch in NOT_IN_TIMM:  # not on timm's hub: HF transformers' facebook/ repos
        assert cfg.hf_hub_id.startswith('facebook/regnet-') and cfg.hf_hub_filename
    else:
        assert cfg.hf_hub_id in (None, f'timm/{name}')
    assert cfg.url is None or cfg.url.startswith('https://')
    assert cfg.sha256 is None or re.fullmatch(r'[0-9a-f]{8,64}', cfg.sha256)
    assert cfg.sha256 == url_hash_prefix(cfg.url)  # the hash the URL's file name carries, when it carries one
    assert cfg.file is None and cfg.source_format in FORMATS
    for size in (cfg.input_size, cfg.test_input_size or cfg.input_size):
        assert len(size) == 3 and size[0] == 3 and size[1] == size[2] and size[1] % 32 == 0
    assert cfg.pool_size == (cfg.input_size[1] // 32,) * 2
    for pct in (cfg.crop_pct, cfg.test_crop_pct or cfg.crop_pct):
        assert 0.8 <= pct <= 1.0
    assert cfg.crop_mode in ('center', 'squash', 'border') and cfg.interpolation in ('bicubic', 'bilinear')
    assert len(cfg.mean) == len(cfg.std) == 3 and all(0 < s < 1 for s in cfg.std)
    assert cfg.license and cfg.origin_url.startswith('https://github.com/')
    assert {0: None, 1000: 'imagenet-1k', 11821: 'imagenet-12k'}[cfg.num_classes] == cfg.label_set
    shapes = state_dict_shapes(cfg.arch)  # the real module names of this arch (timm #153: a wrong name crashes)
    assert shapes[f'{cfg.first_conv}.weight'][1] == cfg.input_size[0]
    assert f'{cfg.classifier}.weight' in shapes and f'{cfg.classifier}.bias' in shapes
    if cfg.top1 is not None:
        assert 60 < cfg.top1 < cfg.top5 < 100 and cfg.metrics_source
    else:
        assert cfg.top5 is None and cfg.metrics_source is None


def test_each_arch_has_exactly_one_default_weight_the_same_as_timm():
    assert sorted({cfg.arch for cfg in WEIGHTS.values()}) == sorted(ARCHS)
    for arch in ARCHS:
        defaults = [cfg for cfg in WEIGHTS.values() if cfg.arch == arch and cfg.default]
        assert len(defaults) == 1, f'{arch}: {[cfg.tag for cfg in defaults]}'
        if arch in NOT_IN_TIMM:  # the ImageNet classifier, as for the other SEER sizes timm has
            assert defaults[0].tag == 'seer_ft_in1k'
            continue
        # timm's default is what timm.create_model(arch, pretrained=True) loads: its first-listed tag
        first_listed = timm.models._registry._model_default_cfgs[arch].tags[0]
        assert defaults[0].tag == timm_pretrained_cfg(arch).tag == first_listed
        assert regzoo.get_pretrained_cfg(arch) is defaults[0]
    assert regzoo.get_pretrained_cfg('regnety_032').tag == timm_pretrained_cfg('regnety_032').tag == 'ra_in1k'
    assert regzoo.get_pretrained_cfg('regnetx_002').tag == timm_pretrained_cfg('regnetx_002').tag == 'pycls_in1k'


@pytest.mark.skipif(not PUBLISHED_CSV.is_file(), reason=f'{PUBLISHED_CSV} (reference table) not present')
def test_published_metrics_match_the_reference_table():
    rows = list(csv.DictReader(PUBLISHED_CSV.open()))
    for row in rows:
        assert f"{row['model']}.{row['tag']}" in WEIGHTS
    for cfg in WEIGHTS.values():
        eval_size = (cfg.test_input_size or cfg.input_size)[1]
        timm_row = [r for r in rows if (r['model'], r['tag']) == (cfg.arch, cfg.tag) and int(r['img_size']) == eval_size
                    and r['source'].endswith('results/results-imagenet.csv')]
        if timm_row:  # the eval that used exactly this cfg wins
            assert (cfg.top1, cfg.top5, cfg.metrics_source) == (
                float(timm_row[0]['top1']), float(timm_row[0]['top5']), timm_row[0]['source']), cfg.name
        elif cfg.top1 is not None:
            assert any((r['model'], r['tag'], r['source']) == (cfg.arch, cfg.tag, cfg.metrics_source)
                       and (float(r['top1']), float(r['top5'])) == (cfg.top1, cfg.top5)
                       and int(r['img_size']) == eval_size for r in rows), cfg.name
        else:  # no number: the reference table has none with an ImageNet-1k top-1 either
            assert not any((r['model'], r['tag']) == (cfg.arch, cfg.tag) and r['top1'] for r in rows), cfg.name


def test_packaged_metrics_table_is_the_one_source():
    """regzoo/zoo/published.csv ships in the package; the weight table's numbers are its numbers, and each
    number was measured with the eval settings of the weight's own cfg."""
    assert resources.files('regzoo.zoo').joinpath('published.csv').is_file()
    published = load_published()
    assert set(published) <= set(WEIGHTS)
    for name, cfg in WEIGHTS.items():
        ref = lookup_published(name)
        if ref is None or ref.top1 is None:
            assert (cfg.top1, cfg.top5, cfg.metrics_source) == (None, None, None), name
            continue
        assert (cfg.top1, cfg.top5, cfg.metrics_source) == (ref.top1, ref.top5, ref.source), name
        eval_settings = ((cfg.test_input_size or cfg.input_size)[-1], cfg.test_crop_pct or cfg.crop_pct,
                         cfg.interpolation)
        assert not ref.settings_differ(*eval_settings), name
    assert regzoo.get_pretrained_cfg('regnety_032').top1 == 82.724
    assert lookup_published('regnety_032') is None  # a bare arch names no weight


def test_lookup_published_reads_another_table_and_names_a_missing_one(tmp_path):
    table = tmp_path / 'mine.csv'
    table.write_text('model,img_size,crop_pct,interpolation,top1,top5,source\n'
                     'regnetx_002.pycls_in1k,224,0.875,bicubic,1.5,2.5,my run\n')
    ref = lookup_published('regnetx_002.pycls_in1k', table)
    assert (ref.top1, ref.top5, ref.img_size, ref.source) == (1.5, 2.5, 224, 'my run')
    with pytest.raises(FileNotFoundError, match='nope.csv does not exist; pass an existing CSV'):
        lookup_published('regnetx_002.pycls_in1k', tmp_path / 'nope.csv')


def test_get_pretrained_cfg_and_errors():
    assert regzoo.get_pretrained_cfg('regnety_032.pycls_in1k').url.endswith('RegNetY-3.2GF_dds_8gpu.pyth')
    with pytest.raises(ValueError, match='valid tags: pycls_in1k, ra_in1k, tv2_in1k, tv_in1k'):
        regzoo.get_pretrained_cfg('regnety_032.in22k')
    with pytest.raises(ValueError, match="no pretrained weights for 'regnety_03'.*regnety_032"):
        regzoo.get_pretrained_cfg('regnety_03')
    with pytest.raises(ValueError, match='valid tags'):
        regzoo.create_model('regnetx_002.nope', pretrained=True)


def test_list_pretrained_and_list_models_agree():
    names = regzoo.list_pretrained()
    assert names == regzoo.list_models(pretrained=True) and len(names) == len(WEIGHTS)
    assert names == sorted(names, key=natural_key)
    assert sorted(regzoo.list_pretrained('regnety_160.*')) == [
        'regnety_160.deit_in1k', 'regnety_160.lion_in12k_ft_in1k', 'regnety_160.pycls_in1k',
        'regnety_160.sw_in12k', 'regnety_160.sw_in12k_ft_in1k', 'regnety_160.swag_ft_in1k',
        'regnety_160.swag_lc_in1k', 'regnety_160.tv2_in1k', 'regnety_160.tv_in1k']
    assert all(split_model_name_tag(n)[1] == 'seer' for n in regzoo.list_pretrained('*.seer'))


def test_cfg_is_frozen_and_replace_checks_fields():
    cfg = WEIGHTS['regnetx_002.pycls_in1k']
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_classes = 10
    assert cfg.replace(file='/x').file == '/x' and cfg.file is None
    with pytest.raises(TypeError, match='no field'):
        cfg.replace(filename='/x')
    assert isinstance(cfg, PretrainedCfg)


def test_tag_picks_num_classes_for_the_model():
    # built on meta: only the head size matters here, and regnety_120 would cost real memory and time
    with torch.device('meta'):
        assert regzoo.create_model('regnety_120.sw_in12k').num_classes == 11821
        assert regzoo.create_model('regnety_120.sw_in12k', num_classes=5).num_classes == 5
        assert regzoo.create_model('regnety_320.seer').num_classes == 0
