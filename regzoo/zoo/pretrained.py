"""Pretrained-weight metadata: one frozen ``PretrainedCfg`` per ``arch.tag``.

The table itself (every public RegNet weight) is ``WEIGHTS`` below; in each arch exactly one entry
has ``default=True``. Published top-1/top-5 and their source are not written here: they are filled
in from the packaged metrics table (``regzoo.zoo.metrics``, ``regzoo/zoo/published.csv``).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from regzoo.utils.names import did_you_mean, natural_key
from regzoo.zoo.metrics import load_published
from regzoo.zoo.pretrained_cfg import TIMM_CFG_KEYS, PretrainedCfg, UnknownTagError

# the names other modules import from here (PretrainedCfg lives in regzoo.zoo.pretrained_cfg)
__all__ = ['REGNET_PAPER', 'TIMM_CFG_KEYS', 'WEIGHTS', 'PretrainedCfg', 'UnknownTagError', 'arch_tags',
           'default_pretrained_cfg', 'url_hash_prefix', 'weight_cfg', 'weight_names']

_TIMM_V01 = 'https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-weights/'
_TIMM_TPU = 'https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-tpu-weights/'
_DEIT_DL = 'https://dl.fbaipublicfiles.com/deit/'
_TV_DL = 'https://download.pytorch.org/models/'
_PYCLS_DL = 'https://dl.fbaipublicfiles.com/pycls/dds_baselines/'
_VISSL_DL = 'https://dl.fbaipublicfiles.com/vissl/model_zoo/'
REGNET_PAPER = 'arXiv:2003.13678'  # "Designing Network Design Spaces" (cited by cfgs and cards)
_HIGH_RES = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0)

def url_hash_prefix(url: str | None) -> str | None:
    """The sha256 prefix torch.hub-style file names carry: 'regnet_y_400mf-c65dace8.pth' -> 'c65dace8'."""
    match = re.search(r'-([0-9a-f]{8,64})\.[a-z]+$', url or '')
    return match.group(1) if match else None


def _weight(arch: str, tag: str, hub: bool = True, **kwargs) -> PretrainedCfg:
    ref = load_published().get(f'{arch}.{tag}')  # read on first use of the table, then cached
    if ref is not None and ref.top1 is not None:  # pretrain-only rows carry eval settings but no number
        kwargs.update(top1=ref.top1, top5=ref.top5, metrics_source=ref.source)
    return PretrainedCfg(
        arch, tag, hf_hub_id=f'timm/{arch}.{tag}' if hub else None, sha256=url_hash_prefix(kwargs.get('url')),
        **kwargs)


def _timm_trained(arch: str, tag: str, **kwargs) -> PretrainedCfg:
    """Trained by timm (RA/RA3/SW/Lion recipes, DeiT's teacher): train 224 crop .95, test 288 crop 1.0."""
    label_set = 'imagenet-12k' if kwargs.get('num_classes') == 11821 else 'imagenet-1k'
    return _weight(
        arch, tag, test_input_size=(3, 288, 288), crop_pct=0.95, test_crop_pct=1.0, label_set=label_set,
        license='apache-2.0', origin_url='https://github.com/huggingface/pytorch-image-models', **kwargs)


def _pycls(arch: str, path: str, **kwargs) -> PretrainedCfg:
    """The paper's own weights; the hub copy is timm's (first conv already flipped BGR -> RGB), the URL pycls's."""
    return _weight(
        arch, 'pycls_in1k', url=f'{_PYCLS_DL}{path}_dds_8gpu.pyth', source_format='pycls',
        license='mit', origin_url='https://github.com/facebookresearch/pycls', paper_ids=REGNET_PAPER, **kwargs)


def _tv(arch: str, tag: str, file: str, **kwargs) -> PretrainedCfg:
    """torchvision's weights: V1 (tv_in1k, not on the hub), V2 (tv2_in1k) and SWAG (swag_ft/_lc)."""
    common = dict(url=_TV_DL + file, source_format='torchvision', origin_url='https://github.com/pytorch/vision',
                  **kwargs)
    if tag == 'tv_in1k':  # torchvision V1 eval: bilinear resize 256, crop 224
        return _weight(arch, tag, hub=False, interpolation='bilinear', crop_pct=0.875, license='bsd-3-clause',
                       paper_ids=REGNET_PAPER, **common)
    if tag.startswith('swag'):
        size = _HIGH_RES if tag == 'swag_ft_in1k' else dict(crop_pct=0.965)
        return _weight(arch, tag, license='cc-by-nc-4.0', paper_ids='arXiv:2201.08371', **size, **common)
    return _weight(arch, tag, crop_pct=0.965, license='bsd-3-clause', **common)


def _seer(arch: str, tag: str, path: str, **kwargs) -> PretrainedCfg:
    """SEER (vissl): the self-supervised trunk (no classifier) and its ImageNet-1k fine-tune at 384."""
    size = _HIGH_RES if tag == 'seer_ft_in1k' else dict(crop_pct=0.965, num_classes=0, label_set=None)
    return _weight(arch, tag, url=_VISSL_DL + path, source_format='classy', license='seer-license',
                   origin_url='https://github.com/facebookresearch/vissl', paper_ids='arXiv:2103.01988',
                   **size, **kwargs)


# default=True marks timm's default (its first-listed tag), so `pretrained=True` means the same weights here and there
@functools.cache
def _weight_table() -> MappingProxyType[str, PretrainedCfg]:
    """The weight table, built on first use: it reads the packaged metrics CSV (``regzoo.zoo.metrics``), which
    importing regzoo does not."""
    return MappingProxyType({cfg.name: cfg for cfg in _weights()})


def _weights() -> tuple[PretrainedCfg, ...]:
    return (
    # regnetx_002
    _pycls('regnetx_002', '160905981/RegNetX-200MF', default=True),
    # regnetx_004
    _pycls('regnetx_004', '160905967/RegNetX-400MF', default=True),
    # regnetx_004_tv
    _tv('regnetx_004_tv', 'tv2_in1k', 'regnet_x_400mf-62229a5f.pth', default=True),
    _tv('regnetx_004_tv', 'tv_in1k', 'regnet_x_400mf-adf1edd5.pth'),
    # regnetx_006
    _pycls('regnetx_006', '160906442/RegNetX-600MF', default=True),
    # regnetx_008
    _tv('regnetx_008', 'tv2_in1k', 'regnet_x_800mf-94a99ebd.pth', default=True),
    _pycls('regnetx_008', '160906036/RegNetX-800MF'),
    _tv('regnetx_008', 'tv_in1k', 'regnet_x_800mf-ad17e45c.pth'),
    # regnetx_016
    _tv('regnetx_016', 'tv2_in1k', 'regnet_x_1_6gf-a12f2b72.pth', default=True),
    _pycls('regnetx_016', '160990626/RegNetX-1.6GF'),
    _tv('regnetx_016', 'tv_in1k', 'regnet_x_1_6gf-e3633e7f.pth'),
    # regnetx_032
    _tv('regnetx_032', 'tv2_in1k', 'regnet_x_3_2gf-7071aa85.pth', default=True),
    _pycls('regnetx_032', '160906139/RegNetX-3.2GF'),
    _tv('regnetx_032', 'tv_in1k', 'regnet_x_3_2gf-f342aeae.pth'),
    # regnetx_040
    _pycls('regnetx_040', '160906383/RegNetX-4.0GF', default=True),
    # regnetx_064
    _pycls('regnetx_064', '161116590/RegNetX-6.4GF', default=True),
    # regnetx_080
    _tv('regnetx_080', 'tv2_in1k', 'regnet_x_8gf-2b70d774.pth', default=True),
    _pycls('regnetx_080', '161107726/RegNetX-8.0GF'),
    _tv('regnetx_080', 'tv_in1k', 'regnet_x_8gf-03ceed89.pth'),
    # regnetx_120
    _pycls('regnetx_120', '160906020/RegNetX-12GF', default=True),
    # regnetx_160
    _tv('regnetx_160', 'tv2_in1k', 'regnet_x_16gf-ba3796d7.pth', default=True),
    _pycls('regnetx_160', '158460855/RegNetX-16GF'),
    _tv('regnetx_160', 'tv_in1k', 'regnet_x_16gf-2007eb11.pth'),
    # regnetx_320
    _tv('regnetx_320', 'tv2_in1k', 'regnet_x_32gf-6eb8fdc6.pth', default=True),
    _pycls('regnetx_320', '158188473/RegNetX-32GF'),
    _tv('regnetx_320', 'tv_in1k', 'regnet_x_32gf-9d47f8d0.pth'),
    # regnety_002
    _pycls('regnety_002', '176245422/RegNetY-200MF', default=True),
    # regnety_004
    _tv('regnety_004', 'tv2_in1k', 'regnet_y_400mf-e6988f5f.pth', default=True),
    _pycls('regnety_004', '160906449/RegNetY-400MF'),
    _tv('regnety_004', 'tv_in1k', 'regnet_y_400mf-c65dace8.pth'),
    # regnety_006
    _pycls('regnety_006', '160981443/RegNetY-600MF', default=True),
    # regnety_008
    _pycls('regnety_008', '160906567/RegNetY-800MF', default=True),
    # regnety_008_tv
    _tv('regnety_008_tv', 'tv2_in1k', 'regnet_y_800mf-58fc7688.pth', default=True),
    _tv('regnety_008_tv', 'tv_in1k', 'regnet_y_800mf-1b27b58c.pth'),
    # regnety_016
    _tv('regnety_016', 'tv2_in1k', 'regnet_y_1_6gf-0d7bc02a.pth', default=True),
    _pycls('regnety_016', '160906681/RegNetY-1.6GF'),
    _tv('regnety_016', 'tv_in1k', 'regnet_y_1_6gf-b11a554e.pth'),
    # regnety_032
    _timm_trained('regnety_032', 'ra_in1k', url=_TIMM_V01 + 'regnety_032_ra-7f2439f9.pth', default=True),
    _tv('regnety_032', 'tv2_in1k', 'regnet_y_3_2gf-9180c971.pth'),
    _pycls('regnety_032', '160906834/RegNetY-3.2GF'),
    _tv('regnety_032', 'tv_in1k', 'regnet_y_3_2gf-b5a9779c.pth'),
    # regnety_040
    _timm_trained('regnety_040', 'ra3_in1k', url=_TIMM_TPU + 'regnety_040_ra3-670e1166.pth', default=True),
    _pycls('regnety_040', '160906838/RegNetY-4.0GF'),
    # regnety_064
    _timm_trained('regnety_064', 'ra3_in1k', url=_TIMM_TPU + 'regnety_064_ra3-aa26dc7d.pth', default=True),
    _pycls('regnety_064', '160907112/RegNetY-6.4GF'),
    # regnety_080
    _timm_trained('regnety_080', 'ra3_in1k', url=_TIMM_TPU + 'regnety_080_ra3-1fdc4344.pth', default=True),
    _pycls('regnety_080', '161160905/RegNetY-8.0GF'),
    # regnety_080_tv
    _tv('regnety_080_tv', 'tv2_in1k', 'regnet_y_8gf-dc2b1b54.pth', default=True),
    _tv('regnety_080_tv', 'tv_in1k', 'regnet_y_8gf-d0d0e4a8.pth'),
    # regnety_120
    _timm_trained('regnety_120', 'sw_in12k_ft_in1k', default=True),
    _timm_trained('regnety_120', 'sw_in12k', num_classes=11821),
    _pycls('regnety_120', '160907100/RegNetY-12GF'),
    # regnety_160
    _timm_trained('regnety_160', 'sw_in12k_ft_in1k', default=True),
    _timm_trained('regnety_160', 'lion_in12k_ft_in1k'),
    _timm_trained('regnety_160', 'sw_in12k', num_classes=11821),
    _timm_trained('regnety_160', 'deit_in1k', url=_DEIT_DL + 'regnety_160-a5fe301d.pth'),
    _tv('regnety_160', 'tv2_in1k', 'regnet_y_16gf-3e4a00f9.pth'),
    _tv('regnety_160', 'swag_ft_in1k', 'regnet_y_16gf_swag-43afe44d.pth'),
    _tv('regnety_160', 'swag_lc_in1k', 'regnet_y_16gf_lc_swag-f3ec0043.pth'),
    _pycls('regnety_160', '161303400/RegNetY-16GF'),
    _tv('regnety_160', 'tv_in1k', 'regnet_y_16gf-9e6ed7dd.pth'),
    # regnety_320
    _tv('regnety_320', 'tv2_in1k', 'regnet_y_32gf-8db6d4b5.pth', default=True),
    _tv('regnety_320', 'swag_ft_in1k', 'regnet_y_32gf_swag-04fdfa75.pth'),
    _tv('regnety_320', 'swag_lc_in1k', 'regnet_y_32gf_lc_swag-e1583746.pth'),
    _seer('regnety_320', 'seer_ft_in1k',
          'seer_finetuned/seer_regnet32_finetuned_in1k_model_final_checkpoint_phase78.torch'),
    _seer('regnety_320', 'seer', 'seer_regnet32d/seer_regnet32gf_model_iteration244000.torch'),
    _pycls('regnety_320', '161277763/RegNetY-32GF'),
    _tv('regnety_320', 'tv_in1k', 'regnet_y_32gf-4dee3f7a.pth'),
    # regnety_640
    _seer('regnety_640', 'seer_ft_in1k',
          'seer_finetuned/seer_regnet64_finetuned_in1k_model_final_checkpoint_phase78.torch', default=True),
    _seer('regnety_640', 'seer', 'seer_regnet64/seer_regnet64gf_model_final_checkpoint_phase0.torch'),
    # regnety_1280
    _tv('regnety_1280', 'swag_ft_in1k', 'regnet_y_128gf_swag-c8ce3e52.pth', default=True),
    _tv('regnety_1280', 'swag_lc_in1k', 'regnet_y_128gf_lc_swag-cbe8ce12.pth'),
    _seer('regnety_1280', 'seer_ft_in1k',
          'seer_finetuned/seer_regnet128_finetuned_in1k_model_final_checkpoint_phase78.torch'),
    _seer('regnety_1280', 'seer',
          'swav_ig1b_regnet128Gf_cnstant_bs32_node16_sinkhorn10_proto16k_syncBN64_warmup8k/'
          'model_final_checkpoint_phase0.torch'),
    # regnety_2560
    _seer('regnety_2560', 'seer_ft_in1k',
          'seer_finetuned/seer_regnet256_finetuned_in1k_model_final_checkpoint_phase38.torch', default=True),
    # regnety_10b (SEER 10B, arXiv:2202.08360): not on timm's hub; the hub copies are transformers' conversions
    # (convert_regnet_seer_10b_to_pytorch.py) in the HF layout, ~37 GB of fp32 as pytorch_model-0000k-of-00004.bin
    # shards + their index
    _seer('regnety_10b', 'seer_ft_in1k', 'seer_finetuned/seer_10b_finetuned_in1k_model_phase28_conso.torch',
          default=True).replace(hf_hub_id='facebook/regnet-y-10b-seer-in1k',
                                hf_hub_filename='pytorch_model.bin.index.json', paper_ids='arXiv:2202.08360'),
    _seer('regnety_10b', 'seer', 'seer_regnet10B/model_iteration124500_conso.torch').replace(
        hf_hub_id='facebook/regnet-y-10b-seer', hf_hub_filename='pytorch_model.bin.index.json',
        paper_ids='arXiv:2202.08360'),

    )


class _WeightTable(Mapping):
    """``arch.tag`` -> ``PretrainedCfg`` of every public weight: a read-only view of ``_weight_table()``."""

    def __getitem__(self, name: str) -> PretrainedCfg:
        return _weight_table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_weight_table())

    def __len__(self) -> int:
        return len(_weight_table())

    def __repr__(self) -> str:
        return f'WEIGHTS({len(self)} weights)'


WEIGHTS: Mapping[str, PretrainedCfg] = _WeightTable()


@functools.cache
def _defaults() -> Mapping[str, PretrainedCfg]:
    """arch -> its default weight: an index of the ``default`` field, not a second table."""
    return MappingProxyType({cfg.arch: cfg for cfg in WEIGHTS.values() if cfg.default})

def weight_names(filter: str = '') -> list[str]:
    """All ``arch.tag`` names in the weight table, fnmatch-filtered, naturally sorted.

    The public listing with timm's semantics (bare names match their tags, ``exclude_filters``, only
    registered archs) is ``regzoo.list_pretrained`` in ``regzoo.zoo.registry``.
    """
    import fnmatch
    names = [n for n in WEIGHTS if not filter or fnmatch.fnmatchcase(n, filter)]
    return sorted(names, key=natural_key)


def arch_tags(arch: str) -> list[str]:
    """The tags ``arch`` has weights for, default first (timm's order of preference), then sorted."""
    tags = sorted((cfg.tag for cfg in WEIGHTS.values() if cfg.arch == arch), key=natural_key)
    default = _defaults().get(arch)
    return [default.tag] + [t for t in tags if t != default.tag] if default else tags


def default_pretrained_cfg(arch: str) -> PretrainedCfg | None:
    """The cfg of ``arch``'s default weight (what ``pretrained=True`` loads), None for an arch without weights."""
    return _defaults().get(arch)


def weight_cfg(name: str) -> PretrainedCfg:
    """The table's cfg of ``arch.tag``, or of the arch's default weight for a bare ``arch`` (the registered
    names of the table only; ``regzoo.get_pretrained_cfg`` is timm's lookup: aliases, hub repos, user archs).

    An arch with weights and an unknown tag raises ``UnknownTagError`` (a RuntimeError as in timm, and a
    ValueError) listing the valid tags; an arch without weights a ValueError with close matches.
    """
    arch, _, tag = name.partition('.')
    if not tag and arch in _defaults():
        return _defaults()[arch]
    if f'{arch}.{tag}' in WEIGHTS:
        return WEIGHTS[f'{arch}.{tag}']
    if tags := sorted(cfg.tag for cfg in WEIGHTS.values() if cfg.arch == arch):
        raise UnknownTagError(f'Invalid pretrained tag ({tag or None}) for {arch}: {arch} has no pretrained tag '
                              f'{tag or None!r}; valid tags: {", ".join(tags)}')
    hint = did_you_mean(arch, {cfg.arch for cfg in WEIGHTS.values()}, n=5)
    raise ValueError(f'no pretrained weights for {arch!r}{hint}')
