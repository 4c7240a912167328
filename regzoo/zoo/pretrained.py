"""Pretrained-weight metadata: one frozen ``PretrainedCfg`` per ``arch.tag``.

The table itself (every public RegNet weight) is ``WEIGHTS`` below; in each arch exactly one entry
has ``default=True``. Published top-1/top-5 and their source are not written here: they are filled
in from the packaged metrics table (``regzoo.zoo.metrics``, ``regzoo/zoo/published.csv``).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from regzoo.data import labels
from regzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from regzoo.utils.names import did_you_mean, natural_key, split_model_name_tag
from regzoo.zoo.metrics import load_published

# timm's PretrainedCfg fields (timm >= 1.0), in timm's order: the keys of a PretrainedCfg read as a mapping
TIMM_CFG_KEYS = (
    'url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source', 'architecture', 'tag', 'custom_load',
    'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
    'test_crop_pct', 'crop_mode', 'mean', 'std', 'num_classes', 'label_offset', 'label_names', 'label_descriptions',
    'pool_size', 'test_pool_size', 'first_conv', 'classifier', 'license', 'description', 'origin_url', 'paper_name',
    'paper_ids', 'notes')
_KEEP_NULL = ('pool_size', 'first_conv', 'classifier')  # timm's filter_pretrained_cfg keeps these keys when None
_LABEL_KEYS = ('label_names', 'label_descriptions')
# timm keys regzoo has no field for, with the one value each always has here (regzoo's loader reads every
# supported layout itself, has no in-memory state_dict source and no background-class offset)
_TIMM_CONSTANTS = MappingProxyType({'state_dict': None, 'source': None, 'custom_load': False, 'label_offset': None})
# values of those keys that mean the same as the constant (timm writes 'timm' or '' for the default source)
_TIMM_CONSTANT_ALIASES = MappingProxyType(
    {'state_dict': (None,), 'source': (None, '', 'timm'), 'custom_load': (None, False), 'label_offset': (None, 0)})


class UnknownTagError(RuntimeError, ValueError):
    """A pretrained tag the arch has no weight for: a RuntimeError as in timm, and a ValueError as before."""


@functools.lru_cache(maxsize=None)
def _label_info(label_set: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(label names, (label name, description) pairs) of a label set, read once."""
    names = labels.label_names(label_set)
    return names, tuple(zip(names, labels.label_descriptions(label_set)))


def _label_set_of(names) -> str | None:
    """The label set whose class ids are ``names``; None for names of no known set (a fine-tune's classes)."""
    names = tuple(names)
    for label_set in labels.LABEL_SETS:
        try:
            if len(_label_info(label_set)[0]) == len(names) and _label_info(label_set)[0] == names:
                return label_set
        except (ImportError, ValueError, OSError):  # a label set that cannot be read here matches nothing
            continue
    return None


def _from_timm_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with timm's names and conventions turned into PretrainedCfg fields (unknown keys are kept).

    'architecture' -> arch, tag None -> '', url '' -> None, lists -> tuples; timm-only keys must hold the
    value they always have here; label_names (and label_descriptions) select the label set they are.
    """
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    if 'architecture' in out:
        architecture = out.pop('architecture')
        if 'arch' in out and architecture and out['arch'] != architecture:
            raise ValueError(f"pretrained cfg names two architectures: arch={out['arch']!r}, "
                             f'architecture={architecture!r}')
        out.setdefault('arch', architecture or '')
    if 'tag' in out and out['tag'] is None:
        out['tag'] = ''
    if 'url' in out and out['url'] == '':
        out['url'] = None
    for key, allowed in _TIMM_CONSTANT_ALIASES.items():
        if key in out and not any(out[key] is a or (a is not None and out[key] == a) for a in allowed):
            raise ValueError(f'pretrained cfg {key}={out[key]!r} is not supported by regzoo (it can only be '
                             f'{_TIMM_CONSTANTS[key]!r}): regzoo reads every weight layout itself and loads '
                             'from file, url or hf_hub_id')
        out.pop(key, None)
    names, descriptions = out.pop('label_names', None), out.pop('label_descriptions', None)
    if names is not None:
        label_set = _label_set_of(names)
        if label_set is None:  # a classifier of its own classes (a fine-tuned run's folders): keep their names
            out.setdefault('label_set', None)
            out['class_names'] = tuple(names)
        elif out.setdefault('label_set', label_set) != label_set:
            raise ValueError(f"label_names are {label_set}'s but label_set={out['label_set']!r}")
    if descriptions is not None and names is None:
        raise ValueError('label_descriptions without label_names: regzoo derives both from label_set')
    return out


@dataclass(frozen=True)
class PretrainedCfg(Mapping):
    """Where a weight lives, what it expects as input, and what it is published to score.

    Frozen and validated (``replace`` rejects unknown fields). It is also a read-only mapping over timm's
    keys (``TIMM_CFG_KEYS``), so timm code reads it as it reads timm's ``model.pretrained_cfg`` dict:
    ``cfg['mean']``, ``cfg.get('test_input_size')``, ``dict(cfg)``. As timm's ``to_dict()``, keys whose
    value is None are left out (except ``pool_size``, ``first_conv``, ``classifier``); ``architecture``
    is ``arch``, ``url`` is '' when there is none, ``label_names``/``label_descriptions`` come from
    ``label_set``. regzoo's own fields (``label_set``, ``top1``, ``sha256``, ...) are attributes only, so
    ``timm.models.PretrainedCfg(**dict(cfg))`` works.
    """
    arch: str
    tag: str
    hf_hub_id: str | None = None          # e.g. 'timm/regnety_032.ra_in1k'
    hf_hub_filename: str | None = None    # None: model.safetensors, then pytorch_model.bin
    url: str | None = None                # fallback download (original publisher), checked against sha256
    file: str | None = None               # a local file or directory (set through pretrained_cfg_overlay)
    sha256: str | None = None             # of the url file: full hex digest, or the prefix its name carries
    source_format: str | None = 'timm'    # key layout of the url file (hub files are timm layout); None: detect
    num_classes: int | None = 1000       # None: the cfg of a features_only wrapper (timm drops the key there)
    input_size: tuple[int, int, int] = (3, 224, 224)
    test_input_size: tuple[int, int, int] | None = None
    min_input_size: tuple[int, int, int] | None = None
    fixed_input_size: bool = False        # RegNets take any input size
    pool_size: tuple[int, int] = (7, 7)
    test_pool_size: tuple[int, int] | None = None
    crop_pct: float = 0.875
    test_crop_pct: float | None = None
    crop_mode: str = 'center'             # center, squash or border
    interpolation: str = 'bicubic'
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    first_conv: str = 'stem.conv'
    classifier: str | None = 'head.fc'   # None: a features_only wrapper's cfg (no classifier)
    label_set: str | None = 'imagenet-1k'  # class index order of the classifier (None: no classifier)
    class_names: tuple[str, ...] | None = None  # a classifier of no known label set: its class ids in order
    license: str | None = None
    origin_url: str | None = None
    paper_ids: str | None = None
    paper_name: str | None = None
    description: str | None = None
    notes: tuple[str, ...] | None = None
    top1: float | None = None             # published ImageNet-1k val top-1 (%) at test_input_size
    top5: float | None = None
    metrics_source: str | None = None     # where top1/top5 come from (source column of regzoo/zoo/published.csv)
    default: bool = False                 # the arch's default weight: what a bare arch name with pretrained=True loads

    @property
    def name(self) -> str:
        return f'{self.arch}.{self.tag}'

    @property
    def architecture(self) -> str:
        """timm's name for ``arch``."""
        return self.arch

    @property
    def has_weights(self) -> bool:
        return bool(self.url or self.file or self.hf_hub_id)

    @property
    def label_names(self) -> tuple[str, ...] | None:
        """The class ids in classifier index order (timm >= 1.0): ``class_names``, else from ``label_set``."""
        if self.class_names is not None:
            return self.class_names
        return None if self.label_set is None else _label_info(self.label_set)[0]

    @property
    def label_descriptions(self) -> dict[str, str] | None:
        """{class id: human-readable name} (timm's type, a new dict each time), from ``label_set``; None without one."""
        if self.class_names is not None:  # a fine-tune's class folders are their own description
            return {name: name for name in self.class_names}
        return None if self.label_set is None else dict(_label_info(self.label_set)[1])

    def replace(self, **changes) -> PretrainedCfg:
        """A copy with ``changes``; timm's names work too (``architecture``, ``tag=None``, ``url=''``, ...)."""
        changes = _from_timm_keys(changes)
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f'PretrainedCfg has no field(s) {unknown}')
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], arch: str = '') -> PretrainedCfg:
        """A cfg from a dict in timm's or regzoo's names (a timm ``pretrained_cfg`` dict, a config.json entry).

        ``arch`` is the architecture when the dict names none; fields it leaves out take regzoo's defaults,
        except ``label_set``, which is only set when the dict says it (or lists the label names), and
        ``source_format`` (the url file's layout is detected).
        """
        values = _from_timm_keys(values)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f'PretrainedCfg has no field(s) {unknown}')
        values['arch'] = values.get('arch') or arch
        values.setdefault('tag', '')
        values.setdefault('label_set', None)
        values.setdefault('source_format', None)  # a url of timm's dicts may be in any layout: detect it
        return cls(**values)

    def for_features(self) -> PretrainedCfg:
        """The cfg of a ``features_only`` wrapper: as timm, no ``num_classes`` and no ``classifier``."""
        return dataclasses.replace(self, num_classes=None, classifier=None)

    # ---- the read-only mapping view, in timm's keys -------------------------------------------------------

    def _timm_value(self, key: str) -> Any:
        if key in _TIMM_CONSTANTS:
            return _TIMM_CONSTANTS[key]
        if key == 'architecture':
            return self.arch or None
        if key == 'tag':
            return self.tag or None
        if key == 'url':
            return self.url or ''  # timm's RegNet cfgs say url='' when there is none
        return getattr(self, key)

    def _has_key(self, key: str) -> bool:
        if key not in TIMM_CFG_KEYS:
            return False
        if key in _LABEL_KEYS:  # known without reading the labels
            return self.label_set is not None or self.class_names is not None
        if key == 'classifier' and self.num_classes is None:
            return False  # a features wrapper's cfg: timm removes the key
        return key in _KEEP_NULL or self._timm_value(key) is not None

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str) or not self._has_key(key):
            raise KeyError(key)
        return self._timm_value(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._has_key(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k in TIMM_CFG_KEYS if self._has_key(k))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def to_dict(self, remove_source: bool = False, remove_null: bool = True) -> dict[str, Any]:
        """timm's ``PretrainedCfg.to_dict``: the timm keys, without the weight location with ``remove_source``."""
        out = dict(self) if remove_null else {k: self._timm_value(k) for k in TIMM_CFG_KEYS}
        if remove_source:
            for key in ('url', 'file', 'hf_hub_id', 'hf_hub_filename', 'source'):
                out.pop(key, None)
        return out


_TIMM_V01 = 'https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-weights/'
_TIMM_TPU = 'https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-tpu-weights/'
_DEIT_DL = 'https://dl.fbaipublicfiles.com/deit/'
_TV_DL = 'https://download.pytorch.org/models/'
_PYCLS_DL = 'https://dl.fbaipublicfiles.com/pycls/dds_baselines/'
_VISSL_DL = 'https://dl.fbaipublicfiles.com/vissl/model_zoo/'
_PAPER_REGNET = 'arXiv:2003.13678'
_HIGH_RES = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0)

# read once at import (a 70-row CSV): the weights' published numbers live only in that table
_PUBLISHED = load_published()


def url_hash_prefix(url: str | None) -> str | None:
    """The sha256 prefix torch.hub-style file names carry: 'regnet_y_400mf-c65dace8.pth' -> 'c65dace8'."""
    match = re.search(r'-([0-9a-f]{8,64})\.[a-z]+$', url or '')
    return match.group(1) if match else None


def _weight(arch: str, tag: str, hub: bool = True, **kwargs) -> PretrainedCfg:
    ref = _PUBLISHED.get(f'{arch}.{tag}')
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
        license='mit', origin_url='https://github.com/facebookresearch/pycls', paper_ids=_PAPER_REGNET, **kwargs)


def _tv(arch: str, tag: str, file: str, **kwargs) -> PretrainedCfg:
    """torchvision's weights: V1 (tv_in1k, not on the hub), V2 (tv2_in1k) and SWAG (swag_ft/_lc)."""
    common = dict(url=_TV_DL + file, source_format='torchvision', origin_url='https://github.com/pytorch/vision',
                  **kwargs)
    if tag == 'tv_in1k':  # torchvision V1 eval: bilinear resize 256, crop 224
        return _weight(arch, tag, hub=False, interpolation='bilinear', crop_pct=0.875, license='bsd-3-clause',
                       paper_ids=_PAPER_REGNET, **common)
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
WEIGHTS: MappingProxyType[str, PretrainedCfg] = MappingProxyType({cfg.name: cfg for cfg in (
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

)})
_DEFAULTS = {cfg.arch: cfg for cfg in WEIGHTS.values() if cfg.default}  # an index of the field, not a second table

# HF transformers' RegNet repos -> the weight above each one is a copy of, in RegNetForImageClassification's layout
# (RegNetModel's, without a classifier, for the SEER trunks). transformers' convert_regnet_to_pytorch.py made the
# x/y repos from `timm.create_model(arch, pretrained=True)`, i.e. timm's default weight of 2022: the pycls weights,
# except regnety_032 (timm's RA weights) and regnety_160 (DeiT's); the SEER repos from vissl's checkpoints (the
# 10B ones by convert_regnet_seer_10b_to_pytorch.py). There are no regnet-y-2560-seer repos (the script has no
# source for them). Not in WEIGHTS: they are no new weights, and list_pretrained keeps timm's names.
HF_REPOS: MappingProxyType[str, str] = MappingProxyType({
    **{f'facebook/regnet-{f}-{size}': f'regnet{f}_{size}.pycls_in1k'
       for f in 'xy' for size in ('002', '004', '006', '008', '016', '032', '040', '064', '080', '120', '160', '320')},
    'facebook/regnet-y-032': 'regnety_032.ra_in1k',
    'facebook/regnet-y-160': 'regnety_160.deit_in1k',
    **{f'facebook/regnet-y-{size}-seer{ft}': f'regnety_{size}.seer{tag}'
       for size in ('320', '640', '1280', '10b') for ft, tag in (('', ''), ('-in1k', '_ft_in1k'))},
})


HUB_PREFIX = 'hf-hub:'  # timm's prefix of a model name that is an HF hub repo


def hf_repo_of(name: str) -> str | None:
    """The ``HF_REPOS`` repo a name means, with or without ``hf-hub:``; None for any other name."""
    repo = name.removeprefix(HUB_PREFIX) if isinstance(name, str) else None
    return repo if repo in HF_REPOS else None


def hf_repo_cfg(repo: str) -> PretrainedCfg:
    """The cfg of an ``HF_REPOS`` repo: its weight's (arch, tag, eval transform, numbers), loaded from the repo.

    A weight not in this regzoo raises ValueError naming it. A weight whose own hub copy is that repo (the 10B
    SEER ones) is returned as it is, with its file name (a shard index) and its URL.
    """
    name = HF_REPOS[repo]
    if name not in WEIGHTS:
        raise ValueError(f'{repo} holds the weight {name}, which this regzoo does not have')
    if WEIGHTS[name].hf_hub_id == repo:
        return WEIGHTS[name]
    return WEIGHTS[name].replace(hf_hub_id=repo, hf_hub_filename=None, url=None, sha256=None, source_format='hf',
                                 default=False)


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
    tags = sorted((t for a, t in map(split_model_name_tag, WEIGHTS) if a == arch), key=natural_key)
    default = _DEFAULTS.get(arch)
    return [default.tag] + [t for t in tags if t != default.tag] if default else tags


def default_pretrained_cfg(arch: str) -> PretrainedCfg | None:
    """The cfg of ``arch``'s default weight (what ``pretrained=True`` loads), None for an arch without weights."""
    return _DEFAULTS.get(arch)


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The cfg of ``arch.tag``, or of the arch's default tag for a bare ``arch`` (registered names, no aliases).

    An arch with weights and an unknown tag raises ``UnknownTagError`` (a RuntimeError as in timm, and a
    ValueError) listing the valid tags. ``regzoo.get_pretrained_cfg`` (registry) also resolves aliases.
    """
    arch, tag = split_model_name_tag(name)
    if tag is None and arch in _DEFAULTS:
        return _DEFAULTS[arch]
    key = f'{arch}.{tag}'
    if key not in WEIGHTS:
        tags = sorted(t for a, t in map(split_model_name_tag, WEIGHTS) if a == arch)
        if tags:
            raise UnknownTagError(f'Invalid pretrained tag ({tag}) for {arch}: {arch} has no pretrained tag '
                                  f'{tag!r}; valid tags: {", ".join(tags)}')
        hint = did_you_mean(arch, {split_model_name_tag(n)[0] for n in WEIGHTS}, n=5)
        raise ValueError(f'no pretrained weights for {arch!r}{hint}')
    return WEIGHTS[key]
