"""HF folders that HF tools use (issue 23): ``save_pretrained(format='hf')`` writes the ``preprocessor_config.json``
transformers' RegNet processor reads, so ``pipeline('image-classification')``, ``AutoImageProcessor`` +
``AutoModelForImageClassification`` and ``RegNetModel`` work on it as the HF RegNet docs show; both formats keep
the model's class names; loading an HF folder or hub repo reads its ``preprocessor_config.json``.

The model is a regnetx_002 with randomized BNs and a classifier fitted to the generated classes (the class means
of its pooled features), so its predictions differ between images as a trained model's do. Offline throughout.
"""
from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path

import pytest
import timm
import torch
import transformers
from helpers import offline_caches, populate_hub_cache, randomize_bn, refuse_network

import regzoo
from regzoo.data.synthetic import synthetic_images
from regzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from regzoo.zoo.hf_processor import (
    PROCESSOR_NAME,
    cfg_fields_from_processor,
    inexact,
    processor_config,
)
from regzoo.zoo.pretrained import PretrainedCfg

NAMES = ['cat', 'dog', 'fox', 'owl', 'elk', 'yak']
ATOL = 1e-4


def fit_head(model: regzoo.RegNet, images, labels) -> regzoo.RegNet:
    """Set the classifier to the nearest-class-mean rule on ``model``'s pooled features of labelled images."""
    transform = regzoo.create_transform(regzoo.resolve_data_config(model=model))
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(torch.stack([transform(i) for i in images])),
                                   pre_logits=True)
        center = feats.mean(0)
        means = torch.stack([(feats - center)[torch.tensor(labels) == k].mean(0) for k in range(model.num_classes)])
        scale = 10 / means.norm(dim=1).max()  # logits of a few units, as a trained head gives
        # scale * (mean_k . (f - center) - |mean_k|^2 / 2): the nearest class mean wins
        model.head.fc.weight.copy_(means * scale)
        model.head.fc.bias.copy_(-(means * scale) @ center - 0.5 * scale * means.pow(2).sum(1))
    return model


@pytest.fixture(scope='module')
def named_model() -> regzoo.RegNet:
    torch.manual_seed(0)
    model = regzoo.create_model('regnetx_002', num_classes=len(NAMES),
                                pretrained_cfg_overlay=dict(label_names=NAMES)).eval()
    randomize_bn(model)
    images, labels = synthetic_images(60, size=(96, 160), num_classes=len(NAMES), seed=10)
    return fit_head(model, images, labels)


@pytest.fixture(scope='module')
def hf_dir(named_model, tmp_path_factory) -> Path:
    return regzoo.save_pretrained(named_model, tmp_path_factory.mktemp('hf') / 'named', format='hf')


@pytest.fixture(scope='module')
def images():
    # varied sizes and aspect ratios, smaller and larger than the 256 px the crop resizes to
    return synthetic_images(120, size=(100, 360), num_classes=len(NAMES), seed=11)[0]


def test_folder_holds_the_processor_and_the_names(hf_dir, named_model):
    config = json.loads((hf_dir / 'config.json').read_text())
    assert config['id2label'] == {str(i): n for i, n in enumerate(NAMES)}
    assert config['label2id'] == {n: i for i, n in enumerate(NAMES)}
    processor = json.loads((hf_dir / PROCESSOR_NAME).read_text())
    assert processor['image_processor_type'] == 'ConvNextImageProcessor'
    assert (processor['size'], processor['crop_pct'], processor['resample']) == ({'shortest_edge': 224}, 0.875, 3)
    assert (processor['image_mean'], processor['image_std']) == (list(IMAGENET_MEAN), list(IMAGENET_STD))


def test_pipeline_agrees_with_predict(hf_dir, named_model, images):
    """issue 23's bar: the pipeline's top-1 label is regzoo.predict's for >= 99 % of images."""
    pipe = transformers.pipeline('image-classification', model=str(hf_dir))
    theirs = [r[0]['label'] for r in pipe(images, top_k=1)]
    ours = [p[0].label for p in regzoo.predict(named_model, images, topk=1)]
    counts = collections.Counter(ours)
    assert len(counts) >= 4 and max(counts.values()) <= 0.6 * len(ours), counts  # predictions really differ
    agree = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
    assert agree >= 0.99, (agree, [(a, b) for a, b in zip(ours, theirs) if a != b])


def test_hf_docs_snippet_runs_on_the_folder(hf_dir, named_model, images):
    """The HF RegNet documentation's usage, on a regzoo folder: AutoImageProcessor + the Auto model class."""
    image_processor = transformers.AutoImageProcessor.from_pretrained(hf_dir)
    model = transformers.AutoModelForImageClassification.from_pretrained(hf_dir).eval()
    assert isinstance(model, transformers.RegNetForImageClassification)
    assert type(image_processor).__name__.startswith('ConvNextImageProcessor')
    for image, ours in zip(images[:8], regzoo.predict(named_model, images[:8], topk=1)):
        inputs = image_processor(image, return_tensors='pt')
        with torch.no_grad():
            logits = model(**inputs).logits
            assert (logits - named_model(inputs['pixel_values'])).abs().max().item() <= ATOL
        predicted_label = logits.argmax(-1).item()
        assert model.config.id2label[predicted_label] == ours[0].label


def test_regnet_model_gives_regzoo_features(hf_dir, named_model):
    """RegNetModel's last_hidden_state, pooler_output and hidden_states are regzoo's features."""
    model = transformers.RegNetModel.from_pretrained(hf_dir).eval()
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        final, taps = named_model.forward_intermediates(x)
        pooled = named_model.forward_head(named_model.forward_features(x), pre_logits=True)
    assert (out.last_hidden_state - final).abs().max().item() <= ATOL
    assert (out.pooler_output.flatten(1) - pooled).abs().max().item() <= ATOL
    assert len(out.hidden_states) == len(taps) == 5  # stem, then stages s1..s4
    for theirs, ours in zip(out.hidden_states, taps):
        assert theirs.shape == ours.shape and (theirs - ours).abs().max().item() <= ATOL


@pytest.mark.parametrize('format', ['hf', 'timm'])
def test_reload_predicts_the_same_names(format, named_model, images, tmp_path):
    out = regzoo.save_pretrained(named_model, tmp_path, format=format)
    again = regzoo.create_model('regnetx_002', checkpoint_path=out).eval()
    assert again.pretrained_cfg.label_names == tuple(NAMES)
    ours = [[(p.label, p.index) for p in preds] for preds in regzoo.predict(named_model, images[:10], topk=2)]
    assert [[(p.label, p.index) for p in preds] for preds in regzoo.predict(again, images[:10], topk=2)] == ours


def test_timm_folder_keeps_label_names_and_timm_reads_them(named_model, tmp_path):
    config = json.loads((regzoo.save_pretrained(named_model, tmp_path, format='timm') / 'config.json').read_text())
    assert config['label_names'] == NAMES and 'label_descriptions' not in config  # the names are their own
    reference = timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    assert list(reference.pretrained_cfg['label_names']) == NAMES


def test_imagenet_weights_keep_imagenet_names_in_both_formats(tmp_path):
    # the weight's cfg given (as its weights would set it), random weights: nothing is downloaded
    model = regzoo.create_model('regnetx_002', pretrained_cfg=regzoo.get_pretrained_cfg('regnetx_002.pycls_in1k'))
    timm_config = json.loads((regzoo.save_pretrained(model, tmp_path / 't', format='timm') / 'config.json').read_text())
    assert timm_config['label_names'][0] == 'n01440764'
    assert timm_config['label_descriptions']['n01440764'] == 'tench, Tinca tinca'
    hf_config = json.loads((regzoo.save_pretrained(model, tmp_path / 'h', format='hf') / 'config.json').read_text())
    assert hf_config['id2label']['0'] == 'tench, Tinca tinca'
    for folder in ('t', 'h'):
        again = regzoo.create_model('regnetx_002', checkpoint_path=tmp_path / folder)
        assert again.pretrained_cfg.label_set == 'imagenet-1k'


HF_PROCESSORS = [  # (preprocessor_config fields, the regzoo cfg fields they say)
    (dict(size={'shortest_edge': 288}, crop_pct=1.0, resample=3),
     dict(input_size=(3, 288, 288), crop_pct=1.0, crop_mode='center', interpolation='bicubic')),
    (dict(size={'shortest_edge': 160}, crop_pct=0.9, resample=2, image_mean=[0.5] * 3, image_std=[0.25] * 3),
     dict(input_size=(3, 160, 160), crop_pct=0.9, interpolation='bilinear', mean=(0.5,) * 3, std=(0.25,) * 3)),
    (dict(size={'shortest_edge': 384}, crop_pct=0.875, resample=3),  # from 384 up the processor warps: squash
     dict(input_size=(3, 384, 384), crop_pct=1.0, crop_mode='squash')),
    (dict(size=224, crop_pct=0.875, resample=3, feature_extractor_type='ConvNextFeatureExtractor'),  # legacy form
     dict(input_size=(3, 224, 224), crop_pct=0.875, crop_mode='center')),
]


def _processor(**fields) -> dict:
    return {'image_processor_type': 'ConvNextImageProcessor', 'do_resize': True, 'do_rescale': True,
            'rescale_factor': 1 / 255, 'do_normalize': True, 'image_mean': list(IMAGENET_MEAN),
            'image_std': list(IMAGENET_STD), **fields}


@pytest.mark.parametrize('fields, expected', HF_PROCESSORS)
def test_hf_folder_loads_with_its_processor(fields, expected, hf_dir, tmp_path):
    folder = tmp_path / 'edited'
    folder.mkdir()
    for p in hf_dir.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    processor = _processor(**fields)
    if 'feature_extractor_type' in processor:
        del processor['image_processor_type']
    (folder / PROCESSOR_NAME).write_text(json.dumps(processor))
    cfg = regzoo.create_model('regnetx_002', checkpoint_path=folder).pretrained_cfg
    assert {k: cfg[k] for k in expected} == expected
    data = regzoo.resolve_data_config(model=regzoo.create_model('regnetx_002', checkpoint_path=folder))
    assert {k: data[k] for k in expected} == expected  # no test size of the weight's wins over the file


def test_hf_folder_without_a_processor_keeps_the_defaults(hf_dir, tmp_path):
    for p in hf_dir.iterdir():
        if p.name != PROCESSOR_NAME:
            (tmp_path / p.name).write_bytes(p.read_bytes())
    cfg = regzoo.create_model('regnetx_002', checkpoint_path=tmp_path).pretrained_cfg
    assert (cfg.input_size, cfg.crop_pct, cfg.interpolation) == ((3, 224, 224), 0.875, 'bicubic')


def test_hub_repo_loads_with_its_processor(named_model, tmp_path, monkeypatch):
    """An HF-layout hub repo not in regzoo's table: its preprocessor_config.json, found in the HF cache."""
    cache = offline_caches(tmp_path, monkeypatch)
    refuse_network(monkeypatch)
    with tempfile.TemporaryDirectory() as tmp:
        regzoo.save_pretrained(named_model, tmp, format='hf', card=False)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir()}
    files[PROCESSOR_NAME] = json.dumps(_processor(size={'shortest_edge': 288}, crop_pct=1.0, resample=2)).encode()
    populate_hub_cache(cache, 'someone/pets-regnet', files)
    model = regzoo.create_model('hf-hub:someone/pets-regnet', pretrained=True)
    cfg = model.pretrained_cfg
    assert (cfg.input_size, cfg.crop_pct, cfg.interpolation) == ((3, 288, 288), 1.0, 'bilinear')
    assert cfg.label_names == tuple(NAMES)
    del files[PROCESSOR_NAME]  # the file is optional: without it, regzoo's defaults
    populate_hub_cache(cache, 'someone/bare-regnet', files)
    cfg = regzoo.create_model('hf-hub:someone/bare-regnet', pretrained=True).pretrained_cfg
    assert (cfg.input_size, cfg.crop_pct, cfg.interpolation) == ((3, 224, 224), 0.875, 'bicubic')


@pytest.mark.parametrize('overlay', [
    dict(),
    dict(test_input_size=(3, 288, 288), test_crop_pct=1.0, interpolation='bilinear'),
    dict(input_size=(3, 160, 160), crop_pct=0.95, mean=(0.5,) * 3, std=(0.5,) * 3),
])
def test_expressible_cfgs_round_trip_through_the_processor(overlay):
    cfg = PretrainedCfg('regnetx_002', '').replace(**overlay)
    assert inexact(cfg) == []
    back = PretrainedCfg('regnetx_002', '').replace(**cfg_fields_from_processor(processor_config(cfg)))
    assert regzoo.resolve_data_config(pretrained_cfg=back) == regzoo.resolve_data_config(pretrained_cfg=cfg)


@pytest.mark.parametrize('overlay, why', [
    (dict(crop_mode='squash'), "crop_mode='squash'"),
    (dict(crop_mode='border'), "crop_mode='border'"),
    (dict(input_size=(3, 224, 288)), 'non-square input 224x288'),
    (dict(test_input_size=(3, 384, 384), test_crop_pct=0.95), 'ignoring crop_pct 0.95'),
    (dict(input_size=(3, 384, 384), crop_pct=1.0), 'warps the whole image'),
    (dict(interpolation='lanczos'), "interpolation='lanczos'"),
])
def test_what_the_processor_cannot_say_is_named(overlay, why):
    assert any(why in line for line in inexact(PretrainedCfg('regnetx_002', '').replace(**overlay)))


def _pixel_diff(cfg_overlay: dict, images) -> tuple[float, float]:
    """(max, mean) |HF processor - regzoo transform| in 0-255 grey levels, over ``images``."""
    model = regzoo.create_model('regnetx_002', pretrained_cfg_overlay=cfg_overlay)
    with tempfile.TemporaryDirectory() as tmp:
        regzoo.save_pretrained(model, tmp, format='hf', card=False)
        processor = transformers.AutoImageProcessor.from_pretrained(tmp)
    transform = regzoo.create_transform(regzoo.resolve_data_config(model=model))
    std = torch.tensor(model.pretrained_cfg.std).view(3, 1, 1)
    diffs = [((processor(i, return_tensors='pt')['pixel_values'][0] - transform(i)) * std * 255).abs()
             for i in images]
    return max(d.max().item() for d in diffs), sum(d.mean().item() for d in diffs) / len(diffs)


@pytest.mark.parametrize('overlay', [dict(), dict(input_size=(3, 288, 288), crop_pct=1.0, interpolation='bilinear')])
def test_processor_pixels_equal_regzoos_where_expressible(overlay):
    """Measured: where the crop is centred alike, the processor's pixels are regzoo's up to resize rounding."""
    rng_images = synthetic_images(12, size=(96, 320), num_classes=6, seed=3)[0]
    crop = regzoo.resolve_data_config(pretrained_cfg=PretrainedCfg('x', '').replace(**overlay))
    side = int(crop.input_size[1] / crop.crop_pct)

    def even_margin(image) -> bool:  # transformers floors an odd centring margin, torchvision rounds it
        w, h = image.size
        long = int(side * max(w, h) / min(w, h))
        return (long - crop.input_size[1]) % 2 == 0
    largest, mean = _pixel_diff(overlay, [i for i in rng_images if even_margin(i)])
    assert largest <= 3 and mean <= 0.1, (largest, mean)


@pytest.mark.parametrize('fields, why', [
    (dict(crop_pct='wide'), 'could not convert'),
    (dict(image_std=[0.5, 0.5]), 'std'),
    (dict(image_std=[0.0, 0.5, 0.5]), 'std must be positive'),
])
def test_a_broken_processor_file_is_named(fields, why, hf_dir, tmp_path):
    for p in hf_dir.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / PROCESSOR_NAME).write_text(json.dumps(_processor(size={'shortest_edge': 200}, **fields)))
    with pytest.raises(ValueError, match=rf'{PROCESSOR_NAME}: .*{why}.*fix the file or delete it'):
        regzoo.create_model('regnetx_002', checkpoint_path=tmp_path)
