"""Model cards: the README.md ``save_pretrained`` writes next to the weights, in the spirit of timm's hub cards.

    text = model_card(model, repo_id='me/regnety_032-flowers', format='timm')

A card is YAML front matter (hub metadata: library, license, tags, datasets, ``model-index`` with the weight's
published top-1/top-5, and a ``regzoo`` block of params / FLOPs / image sizes) followed by what the model is, how
to classify an image, extract features and fine-tune with regzoo (code that runs as written:
``tests/test_card.py`` executes it), and the citation.

The numbers and names come from the weight table (``regzoo.zoo.pretrained``: license, source, published
metrics) and the model itself; nothing is measured here. FLOPs and activations are ``regzoo.complexity``'s,
which is a later layer than this one: callers that have them pass ``complexity=`` (``regzoo.push_to_hub``
does); without it the card gives the parameter count only.

``write_model_card`` writes the file unless a README.md that regzoo did not write is already there: a card
regzoo generated carries ``CARD_MARKER`` and is regenerated on the next save; delete that line to keep edits.
"""
from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from regzoo.data.transforms import resolve_data_config
from regzoo.utils.files import atomic_write
from regzoo.zoo.applying import adapt_input_cfg
from regzoo.zoo.builder import arch_cfg
from regzoo.zoo.hf_processor import processor_config, with_processor
from regzoo.zoo.layout import SAFETENSORS_INDEX
from regzoo.zoo.pretrained import REGNET_PAPER, WEIGHTS, PretrainedCfg
from regzoo.zoo.registry import REGISTRY

_LOGGER = logging.getLogger(__name__)
CARD_NAME = 'README.md'
CARD_MARKER = '<!-- regzoo model card: save_pretrained regenerates this file; delete this line to keep your edits -->'
IMAGE = 'image.jpg'  # the image the usage code classifies: a placeholder the reader replaces
_TIMM_REPO = 'https://github.com/huggingface/pytorch-image-models'
# license ids the Hub knows; any other (SEER's own license) is declared as `other` with its name and a link
_HUB_LICENSES = frozenset({'apache-2.0', 'mit', 'bsd-3-clause', 'cc-by-4.0', 'cc-by-nc-4.0', 'cc-by-sa-4.0'})
_DEFAULT_LICENSE = 'apache-2.0'  # regzoo's own, for weights of no known origin
_DATASET_NAMES = {'imagenet-1k': 'ImageNet-1k', 'imagenet-12k': 'ImageNet-12k', 'imagenet-22k': 'ImageNet-22k'}
# pretraining named by a tag token (timm's tag convention: `sw_in12k_ft_in1k`, `seer_ft_in1k`, `swag_lc_in1k`)
_PRETRAINING = {'in12k': 'ImageNet-12k', 'seer': '1B uncurated Instagram images, self-supervised (SEER)',
                'swag': '3.6B Instagram images, weakly supervised on hashtags (SWAG)'}
_PAPERS = {  # paper id -> (title, bibtex)
    REGNET_PAPER: ('Designing Network Design Spaces', r"""@InProceedings{Radosavovic2020,
  title = {Designing Network Design Spaces},
  author = {Ilija Radosavovic and Raj Prateek Kosaraju and Ross Girshick and Kaiming He and Piotr Doll{\'a}r},
  booktitle = {CVPR},
  year = {2020}
}"""),
    'arXiv:2103.01988': ('Self-supervised Pretraining of Visual Features in the Wild', r"""@article{goyal2021self,
  title = {Self-supervised Pretraining of Visual Features in the Wild},
  author = {Priya Goyal and Mathilde Caron and Benjamin Lefaudeux and Min Xu and Pengchao Wang and Vivek Pai and
            Mannat Singh and Vitaliy Liptchinsky and Ishan Misra and Armand Joulin and Piotr Bojanowski},
  journal = {arXiv preprint arXiv:2103.01988},
  year = {2021}
}"""),
    'arXiv:2201.08371': ('Revisiting Weakly Supervised Pre-Training of Visual Perception Models',
                         r"""@InProceedings{singh2022revisiting,
  title = {Revisiting Weakly Supervised Pre-Training of Visual Perception Models},
  author = {Mannat Singh and Laura Gustafson and Aaron Adcock and Vinicius de Freitas Reis and Bugra Gedik and
            Raj Prateek Kosaraju and Dhruv Mahajan and Ross Girshick and Piotr Doll{\'a}r and Laurens van der Maaten},
  booktitle = {CVPR},
  year = {2022}
}"""),
}
_TIMM_BIBTEX = r"""@misc{rw2019timm,
  author = {Ross Wightman},
  title = {PyTorch Image Models},
  year = {2019},
  publisher = {GitHub},
  journal = {GitHub repository},
  doi = {10.5281/zenodo.4414861},
  howpublished = {\url{https://github.com/huggingface/pytorch-image-models}}
}"""


@dataclass(frozen=True)
class CardFacts:
    """What a card says about one model, gathered once (``card_facts``) and rendered by pure functions."""
    arch: str | None               # registered name; None for a RegNet of no registered architecture
    summary: str                   # the architecture in a line (its factory's docstring)
    cfg: PretrainedCfg             # the model's pretrained cfg: eval settings, labels
    weight: PretrainedCfg | None   # the weight-table entry the model's weights are, when known
    num_classes: int
    in_chans: int
    params: int
    flops: int | None              # multiply-adds at the nominal image size (regzoo.complexity), when given
    acts: int | None
    plain_arch: bool               # the registered architecture unchanged (so timm builds it from its name)

    @property
    def label_set(self) -> str | None:
        return self.cfg.label_set if self.cfg.num_classes == self.num_classes else None

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.cfg.input_size[1:])

    @property
    def test_image_size(self) -> tuple[int, int] | None:
        return tuple(self.cfg.test_input_size[1:]) if self.cfg.test_input_size else None


def _weight_entry(model: nn.Module, cfg: PretrainedCfg | None) -> PretrainedCfg | None:
    """The weight-table entry ``model``'s cfg names, when the model keeps that weight's classifier.

    As ``config.json``, this trusts the cfg to describe the weights: a model built without weights carries its
    arch's default weight's cfg (timm's convention) and is described as that weight; build it with
    ``pretrained_cfg=regzoo.PretrainedCfg(arch, '')`` to claim none.
    """
    entry = WEIGHTS.get(cfg.name) if cfg is not None and cfg.tag else None
    return entry if entry is not None and entry.num_classes == getattr(model, 'num_classes', None) else None


def card_facts(model: nn.Module, arch: str | None = None, complexity: Mapping[str, int] | None = None) -> CardFacts:
    """The facts a card states about ``model`` (a ``regzoo.RegNet``); ``arch`` names it as ``save_pretrained``'s."""
    cfg = getattr(model, 'pretrained_cfg', None)
    if arch is not None:
        arch = REGISTRY.resolve(arch)  # unknown names raise with close matches
    elif getattr(model, 'arch', None) in REGISTRY.names():
        arch = model.arch
    summary = ((REGISTRY.entrypoint(arch).__doc__ or '').strip().splitlines() or [''])[0] if arch else ''
    return CardFacts(
        arch=arch, summary=summary or 'A RegNet of a custom configuration.',
        cfg=cfg if cfg is not None else PretrainedCfg(arch or '', '', label_set=None),
        weight=_weight_entry(model, cfg), num_classes=model.num_classes, in_chans=model.in_chans,
        params=sum(p.numel() for p in model.parameters()),
        flops=None if complexity is None else int(complexity['flops']),
        acts=None if complexity is None else int(complexity['acts']),
        plain_arch=arch is not None and model.cfg == arch_cfg(arch))


# ------------------------------------------------------------------------------------------------ metadata

def _library(facts: CardFacts, format: str, sharded: bool = False) -> str:
    """The library the folder loads in as is: the Hub's "Use this model" snippet, filters and download counts
    key off ``library_name``, and 'regzoo' is no library the Hub knows, so name the one whose layout we wrote."""
    if format == 'hf':
        return 'transformers'
    if facts.plain_arch and not sharded:  # timm reads one weights file only
        import timm  # timm reads the folder only for an architecture it registers under the same name
        if timm.is_model(facts.arch):
            return 'timm'
    return 'regzoo'


def _datasets(facts: CardFacts) -> list[str]:
    out = [facts.label_set] if facts.label_set else []
    if facts.weight is not None and 'in12k' in facts.weight.tag.split('_') and 'imagenet-12k' not in out:
        out.append('imagenet-12k')
    return out


def _license(facts: CardFacts) -> dict[str, str]:
    name = (facts.weight or facts.cfg).license or _DEFAULT_LICENSE
    if name in _HUB_LICENSES:
        return {'license': name}
    link = (facts.weight or facts.cfg).origin_url
    return {'license': 'other', 'license_name': name, **({'license_link': link} if link else {})}


def _model_index(facts: CardFacts, name: str) -> list[dict] | None:
    """HF's ``model-index``: the weight's published ImageNet-1k results (not measured on this copy)."""
    weight = facts.weight
    if weight is None or weight.top1 is None or weight.label_set != 'imagenet-1k':
        return None
    metrics = [dict(type='accuracy', value=weight.top1, name='top-1 accuracy', verified=False)]
    if weight.top5 is not None:
        metrics.append(dict(type='top_5_accuracy', value=weight.top5, name='top-5 accuracy', verified=False))
    return [dict(name=name, results=[dict(
        task=dict(type='image-classification', name='Image Classification'),
        dataset=dict(type='imagenet-1k', name='ImageNet-1k', split='validation'),
        metrics=metrics)])]


def card_metadata(facts: CardFacts, repo_id: str | None = None, format: str = 'hf', sharded: bool = False) -> dict:
    """The card's YAML front matter as a dict (Hub model-card metadata, plus a ``regzoo`` block of the stats)."""
    library = _library(facts, format, sharded)
    meta = dict(tags=['image-classification', 'regzoo', 'regnet', *([library] if library != 'regzoo' else [])],
                library_name=library, pipeline_tag='image-classification', **_license(facts))
    if datasets := _datasets(facts):
        meta['datasets'] = datasets
    if facts.weight is not None and facts.weight.hf_hub_id and facts.weight.hf_hub_id != repo_id:
        meta['base_model'] = facts.weight.hf_hub_id
    stats = dict(architecture=facts.arch, weights=facts.weight.name if facts.weight else None, format=format,
                 num_classes=facts.num_classes, in_chans=facts.in_chans, params=facts.params, flops=facts.flops,
                 acts=facts.acts, image_size=list(facts.image_size),
                 test_image_size=list(facts.test_image_size) if facts.test_image_size else None)
    meta['regzoo'] = {k: v for k, v in stats.items() if v is not None}
    if index := _model_index(facts, repo_id or (facts.weight.name if facts.weight else facts.arch or 'regnet')):
        meta['model-index'] = index
    return meta


# ---------------------------------------------------------------------------------------------------- text

def _paper_ids(facts: CardFacts) -> list[str]:
    """The RegNet paper, then the weight's own (SEER, SWAG), of those the card knows."""
    ids = [REGNET_PAPER] + ((facts.weight or facts.cfg).paper_ids or '').split(',')
    return [p for p in dict.fromkeys(ids) if p in _PAPERS]


def _size(hw) -> str:
    return f'{hw[0]} x {hw[1]}'


def _details(facts: CardFacts, format: str, folder: str | None, sharded: bool) -> list[str]:
    cfg, weight = facts.cfg, facts.weight
    stats = [f'Params (M): {facts.params / 1e6:.2f}']
    if facts.flops is not None:
        stats += [f'GFLOPs (multiply-adds): {facts.flops / 1e9:.2f} at {_size(facts.image_size)}',
                  f'Activations (M): {facts.acts / 1e6:.2f}']
    sizes = f'train = {_size(facts.image_size)}' + (f', test = {_size(facts.test_image_size)}'
                                                     if facts.test_image_size else '')
    crop = cfg.test_crop_pct or cfg.crop_pct
    lines = ['## Model Details', '',
             '- **Model Type:** Image classification / feature backbone',
             f'- **Architecture:** {f"`{facts.arch}`: " if facts.arch else ""}{facts.summary}',
             '- **Model Stats:**', *[f'  - {s}' for s in stats],
             f'  - Image size: {sizes} (eval crop {crop}, {cfg.interpolation})']
    lines += ['- **Papers:**', *[f'  - {_PAPERS[p][0]}: https://arxiv.org/abs/{p.split(":")[1]}'
                                 for p in _paper_ids(facts)]]
    if facts.label_set:
        lines.append(f'- **Dataset:** {_DATASET_NAMES.get(facts.label_set, facts.label_set)} '
                     f'({facts.num_classes} classes)')
    elif facts.num_classes:
        names = list(cfg.class_names or ())
        shown = ': ' + ', '.join(names[:10] + (['...'] if len(names) > 10 else [])) if names else ''
        lines.append(f'- **Classes:** {facts.num_classes}{shown}')
    else:
        lines.append('- **Classifier:** none (a feature backbone: the model returns pooled features)')
    if weight is not None:
        pretraining = [v for k, v in _PRETRAINING.items() if k in weight.tag.split('_')]
        if pretraining:
            lines.append(f'- **Pretrain Dataset:** {"; ".join(pretraining)}')
        lines.append(f'- **Weights:** `{weight.name}`' + (f', from {weight.origin_url}' if weight.origin_url else '')
                     + (f' (license: {weight.license})' if weight.license else ''))
        if weight.top1 is not None:
            lines.append(f'- **Published ImageNet-1k results:** top-1 {weight.top1:.3f} %'
                         + (f', top-5 {weight.top5:.3f} %' if weight.top5 is not None else '')
                         + f' (source: {weight.metrics_source}; the published weight\'s, not re-measured here)')
    layout = {'hf': "HF transformers' layout (`RegNetForImageClassification`)", 'timm': "timm's hub layout"}[format]
    weights = (f'shards `model-0000k-of-0000n.safetensors` + `{SAFETENSORS_INDEX}`' if sharded
               else '`model.safetensors`')
    lines.append(f'- **Files:** {weights} + `config.json` in {layout}, written by `regzoo.save_pretrained`'
                 + (f' to `{folder}`' if folder else ''))
    return lines


def _create(facts: CardFacts, repo_id: str | None, folder: str | None, extra: str = '') -> str:
    """The ``create_model`` call that loads these weights: from the hub repo, else from the saved folder."""
    if repo_id:
        return f'regzoo.create_model(MODEL, pretrained=True{extra})'
    return f'regzoo.create_model({facts.arch!r}, checkpoint_path={folder or "path/to/this/folder"!r}{extra})'


def _eval_overlay(facts: CardFacts, format: str) -> dict:
    """The eval settings a load of the saved files would miss, for the card's code (``pretrained_cfg_overlay``):
    timm's config.json keeps all; HF's preprocessor_config.json those its processor can say (``hf_processor``),
    so the resolved fields that differ after a round trip through it go into the code."""
    if format != 'hf':
        return {}
    own = resolve_data_config(pretrained_cfg=facts.cfg)
    reloaded = resolve_data_config(pretrained_cfg=with_processor(
        adapt_input_cfg(PretrainedCfg(facts.cfg.arch, ''), facts.in_chans), processor_config(facts.cfg)))
    return {f: own[f] for f in own.keys() if own[f] != reloaded[f]}


def _usage(facts: CardFacts, repo_id: str | None, folder: str | None, format: str, sharded: bool) -> list[str]:
    overlay = _eval_overlay(facts, format)
    header = [f'MODEL = {"hf-hub:" + repo_id!r}'] if repo_id else []
    if overlay:
        header += ["# what HF's preprocessor_config.json cannot say of these weights' eval transform",
                   f'EVAL = {overlay!r}']
    header += [''] if header else []
    eval_arg = ', pretrained_cfg_overlay=EVAL' if overlay else ''
    grey = facts.in_chans == 1
    lines = ['## Model Usage', '', f'With regzoo; `{IMAGE}` stands for any image of yours.', '']
    if facts.arch is None and not repo_id:  # a local folder is loaded by architecture name
        return lines + ['This RegNet matches no registered architecture: register it (see "Registering your own '
                        'RegNet" in regzoo\'s README), then load this folder with '
                        '`regzoo.create_model(NAME, checkpoint_path=FOLDER)`.', '']
    if facts.num_classes:
        crop = facts.cfg.test_crop_pct or facts.cfg.crop_pct
        size = facts.test_image_size or facts.image_size
        what = ' and class names' if format == 'timm' else ''
        lines += ['### Image Classification', '', '```python', 'import regzoo', '', *header,
                  f'model = {_create(facts, repo_id, folder, eval_arg)}.eval()',
                  f"# the weights' eval transform ({size[0]} px, crop {crop}, {facts.cfg.interpolation}){what}",
                  f'for p in regzoo.predict(model, {IMAGE!r}, topk={min(5, facts.num_classes)})[0]:',
                  "    print(f'{p.probability:.3f}  {p.label}')", '```', '']
    lines += ['### Feature Map Extraction and Image Embeddings', '', '```python', 'import torch',
              'from PIL import Image', 'import regzoo', '', *header,
              f'backbone = {_create(facts, repo_id, folder, eval_arg + ", features_only=True")}.eval()',
              'print(backbone.feature_info.channels(), backbone.feature_info.reduction())',
              'transform = regzoo.create_transform(regzoo.resolve_data_config(model=backbone))',
              f'x = transform(Image.open({IMAGE!r}).convert({"L" if grey else "RGB"!r})).unsqueeze(0)',
              'with torch.inference_mode():',
              '    for feature_map in backbone(x):  # stem, then stages s1..s4',
              '        print(tuple(feature_map.shape))', '',
              '# the pooled image embedding: the model without its classifier',
              f'encoder = {_create(facts, repo_id, folder, ", num_classes=0")}.eval()',
              'with torch.inference_mode():',
              '    embedding = encoder(x)',
              'print(tuple(embedding.shape))  # (1, num_features)', '```', '']
    source = (f'--model {shlex.quote("hf-hub:" + repo_id)} --pretrained' if repo_id else
              f'--model {facts.arch} --initial-checkpoint {shlex.quote(folder or "path/to/this/folder")}')
    lines += ['### Fine-tuning', '', 'In Python, a new classifier for your classes (the rest keeps these weights):', '',
              '```python', 'import regzoo', '', *([header[0], ''] if repo_id else []),
              f'model = {_create(facts, repo_id, folder, ", num_classes=5")}', '```', '',
              "With regzoo's `train.py` (its `finetune` recipe) on an ImageFolder tree `DATA/train/<class>/*`, "
              '`DATA/val/<class>/*`:', '', '```bash',
              f'python train.py --recipe finetune {source} \\',
              f'    --data-dir DATA --output runs --experiment {facts.arch or "regnet"}-finetune', '```', '']
    if format == 'hf':
        where = repo_id or folder or 'path/to/this/folder'
        lines += ['### HF transformers', '', '```python', 'import transformers', '',
                  "# preprocessor_config.json holds the weights' eval transform: pipelines apply it",
                  f"classifier = transformers.pipeline('image-classification', model={where!r})",
                  f'predictions = classifier({IMAGE!r})  # [{{"label": ..., "score": ...}}, ...]',
                  f'model = transformers.RegNetForImageClassification.from_pretrained({where!r})', '```', '']
    elif _library(facts, format, sharded) == 'timm':
        where = f'hf-hub:{repo_id}' if repo_id else f'local-dir:{folder or "path/to/this/folder"}'
        lines += ['### timm', '', '```python', 'import timm', '',
                  f'model = timm.create_model({where!r}, pretrained=True)', '```', '']
    return lines


def _citations(facts: CardFacts) -> list[str]:
    entries = [_PAPERS[p][1] for p in _paper_ids(facts)]
    if (facts.weight or facts.cfg).origin_url == _TIMM_REPO:
        entries.append(_TIMM_BIBTEX)
    return ['## Citation', '', *[line for e in entries for line in ('```bibtex', e, '```', '')]]


def model_card(model: nn.Module, arch: str | None = None, repo_id: str | None = None, *,
               folder: str | os.PathLike | None = None, format: str = 'hf',
               complexity: Mapping[str, int] | None = None) -> str:
    """A README.md for ``model`` saved in ``format`` ('hf' or 'timm'): hub metadata, details, usage, citation.

    Args:
        model: a ``regzoo.RegNet``.
        arch: its registered name (default: the one it was built as).
        repo_id: the hub repo it is published as: the usage code then loads ``'hf-hub:' + repo_id``.
        folder: the folder the weights are saved in (whether they are sharded is read there): without
            ``repo_id`` the usage code loads it (``create_model(arch, checkpoint_path=folder)``).
        format: the layout of the saved files ('hf': transformers', 'timm': timm's hub layout).
        complexity: ``regzoo.complexity``'s dict (flops, acts) for the model at its nominal image size.
    """
    import yaml
    facts = card_facts(model, arch, complexity)
    sharded = folder is not None and (Path(folder) / SAFETENSORS_INDEX).is_file()
    folder = None if folder is None or repo_id else str(folder)  # the hub's copy is what a repo's card loads
    title = repo_id or (facts.weight.name if facts.weight else facts.arch) or 'a RegNet'
    front = yaml.safe_dump(card_metadata(facts, repo_id, format, sharded), sort_keys=False, allow_unicode=True,
                           width=1000)
    intro = ('A RegNet image classification model and feature backbone from "Designing Network Design Spaces" '
             '(Radosavovic et al., 2020), saved with regzoo.')
    if facts.weight is not None and facts.weight.notes:
        intro += ' ' + ' '.join(facts.weight.notes)
    lines = ['---', front.rstrip('\n'), '---', CARD_MARKER, '', f'# Model card for {title}', '', intro, '',
             *_details(facts, format, folder, sharded), '', *_usage(facts, repo_id, folder, format, sharded),
             *_citations(facts)]
    return '\n'.join(lines).rstrip('\n') + '\n'


def is_regzoo_card(text: str) -> bool:
    """True for a README.md regzoo generated and nobody claimed (its ``CARD_MARKER`` line is still there)."""
    return CARD_MARKER in text


def write_model_card(folder: str | os.PathLike, text: str) -> Path | None:
    """Write ``text`` as ``folder/README.md`` (atomically); an existing README.md regzoo did not write is kept.

    Returns the path written, or None when a README of the user's was kept (logged as a warning).
    """
    path = Path(folder) / CARD_NAME
    if path.exists() or path.is_symlink():
        try:
            ours = path.is_file() and is_regzoo_card(path.read_text(encoding='utf-8', errors='replace'))
        except OSError:
            ours = False
        if not ours:
            _LOGGER.warning('%s: kept the existing %s (regzoo did not write it); remove it to get a generated '
                            'model card', folder, CARD_NAME)
            return None
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding='utf-8'))
