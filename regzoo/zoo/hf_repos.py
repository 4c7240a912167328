"""HF transformers' own RegNet repos (``facebook/regnet-y-040``, the SEER ones): which regzoo weight each holds.

The table the hub names of ``regzoo.zoo.hub_names`` resolve through, and that ``regzoo.is_model`` and
``regzoo.get_pretrained_cfg`` (``regzoo.zoo.registry``) answer for. It is its own module, below the registry,
because ``hub_names`` builds on the registry (a registered arch for a repo's stages) while the registry's
public lookups need the table: in ``hub_names`` itself the two would import each other.
"""
from __future__ import annotations

from types import MappingProxyType

from regzoo.zoo.pretrained import WEIGHTS
from regzoo.zoo.pretrained_cfg import PretrainedCfg

# HF transformers' RegNet repos -> the weight (of ``WEIGHTS``) each one is a copy of, in RegNetForImageClassification's layout
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
