"""Pretrained-weight metadata: one frozen ``PretrainedCfg`` per ``arch.tag``.

The table itself (every public RegNet weight) is filled in ``WEIGHTS`` below; each arch has one
explicit default tag in ``DEFAULT_TAGS``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType

from .registry import close_matches, natural_key, split_model_name_tag

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedCfg:
    """Where a weight lives, what it expects as input, and what it is published to score."""
    arch: str
    tag: str
    hf_hub_id: str | None = None          # e.g. 'timm/regnety_032.ra_in1k'
    hf_hub_filename: str | None = None    # None: model.safetensors, then pytorch_model.bin
    url: str | None = None                # fallback download, checked against sha256 when known
    file: str | None = None               # a local file or directory (set through pretrained_cfg_overlay)
    sha256: str | None = None
    source_format: str = 'timm'           # key layout of the file: timm, torchvision, pycls, classy, hf
    num_classes: int = 1000
    input_size: tuple[int, int, int] = (3, 224, 224)
    test_input_size: tuple[int, int, int] | None = None
    pool_size: tuple[int, int] = (7, 7)
    crop_pct: float = 0.875
    test_crop_pct: float | None = None
    crop_mode: str = 'center'             # center, squash or border
    interpolation: str = 'bicubic'
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    first_conv: str = 'stem.conv'
    classifier: str = 'head.fc'
    label_set: str = 'imagenet-1k'        # class index order of the classifier
    license: str | None = None
    origin_url: str | None = None
    paper_ids: str | None = None
    top1: float | None = None             # published ImageNet-1k val top-1 (%) at test_input_size
    top5: float | None = None
    metrics_source: str | None = None     # where top1/top5 come from (see results/published.csv)

    @property
    def name(self) -> str:
        return f'{self.arch}.{self.tag}'

    def replace(self, **changes) -> PretrainedCfg:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f'PretrainedCfg has no field(s) {unknown}')
        return dataclasses.replace(self, **changes)


WEIGHTS: MappingProxyType[str, PretrainedCfg] = MappingProxyType({})
DEFAULT_TAGS: MappingProxyType[str, str] = MappingProxyType({})


def list_pretrained(filter: str = '') -> list[str]:
    """All ``arch.tag`` names with weights, fnmatch-filtered, naturally sorted."""
    import fnmatch
    names = [n for n in WEIGHTS if not filter or fnmatch.fnmatchcase(n, filter)]
    return sorted(names, key=natural_key)


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The cfg of ``arch.tag``, or of the arch's default tag for a bare ``arch``."""
    arch, tag = split_model_name_tag(name)
    tag = tag or DEFAULT_TAGS.get(arch)
    key = f'{arch}.{tag}'
    if key not in WEIGHTS:
        tags = sorted(t for a, t in map(split_model_name_tag, WEIGHTS) if a == arch)
        if tags:
            raise ValueError(f'{arch} has no pretrained tag {tag!r}; valid tags: {", ".join(tags)}')
        hint = close_matches(arch, {split_model_name_tag(n)[0] for n in WEIGHTS})
        raise ValueError(f'no pretrained weights for {arch!r}' + (f'; did you mean {hint}?' if hint else ''))
    return WEIGHTS[key]
