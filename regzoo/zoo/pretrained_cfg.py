"""``PretrainedCfg``: where a weight lives, what it expects as input and what it is published to score.

Frozen and validated; also a read-only mapping in timm's keys, so timm code reads it as timm's own
``model.pretrained_cfg``. The table of every public weight is ``regzoo.zoo.pretrained.WEIGHTS``.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from regzoo.data import labels
from regzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD

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
