"""Model cards (regzoo.zoo.card) and push_to_hub's folder (regzoo.deploy.hub): the card names the model, its
metadata is YAML the Hub's own parser reads, its numbers are the weight table's and regzoo.complexity's, and its
usage code runs as written on a generated image, printing the saved model's own top-5."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import timm
import torch
import yaml
from helpers import cache_timm_weights, offline_caches, populate_hub_cache, randomize_bn, refuse_network

import regzoo
from regzoo.data.synthetic import synthetic_image
from regzoo.deploy.hub import HubUnreachableError, prepare_upload
from regzoo.zoo.card import CARD_MARKER, IMAGE
from regzoo.zoo.metrics import lookup_published

ARCH, TAG = 'regnetx_002', 'pycls_in1k'
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
EVAL_96 = dict(test_input_size=(3, 96, 96), test_crop_pct=1.0, interpolation='bilinear')  # not the defaults


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """An empty HF cache and torch cache, offline."""
    return offline_caches(tmp_path, monkeypatch)


@pytest.fixture
def imagenet_model(hub_env):
    """``regnetx_002.pycls_in1k`` loaded with pretrained=True from a cache holding timm's layout of random weights."""
    torch.manual_seed(0)
    cache_timm_weights(hub_env, randomize_bn(timm.create_model(ARCH)).eval(), f'timm/{ARCH}.{TAG}')
    return regzoo.create_model(f'{ARCH}.{TAG}', pretrained=True).eval()


def split_card(text: str) -> tuple[dict, str]:
    """(the YAML front matter, parsed; the markdown body)."""
    match = re.match(r'---\n(.*?)\n---\n(.*)', text, flags=re.DOTALL)
    assert match, 'the card does not start with a --- YAML block ---'
    return yaml.safe_load(match.group(1)), match.group(2)


def python_blocks(text: str) -> list[str]:
    return re.findall(r'```python\n(.*?)```', text, flags=re.DOTALL)


def write_image(folder) -> None:
    synthetic_image(1, 3, (70, 90), np.random.default_rng(0)).save(folder / IMAGE)


def check_top5(printed: list[str], model) -> None:
    """The card's classification lines are ``model``'s own top-5 on the image: its class labels and probabilities."""
    expected = regzoo.predict(model, IMAGE, topk=5)[0]
    assert len(printed) == 5
    for line, p in zip(printed, expected):
        probability, label = line.split('  ', 1)
        assert label == p.label
        assert float(probability) == pytest.approx(p.probability, abs=6e-4)


# --------------------------------------------------------------------------------------------- save_pretrained

@pytest.mark.parametrize('format, library', [('hf', 'transformers'), ('timm', 'timm')])
def test_save_pretrained_writes_a_card(imagenet_model, format, library, tmp_path):
    out = regzoo.save_pretrained(imagenet_model, tmp_path / 'saved', format=format)
    text = (out / 'README.md').read_text()
    meta, body = split_card(text)
    weight = regzoo.get_pretrained_cfg(f'{ARCH}.{TAG}')
    published = lookup_published(f'{ARCH}.{TAG}')  # the packaged metrics table, read directly
    assert f'# Model card for {ARCH}.{TAG}' in body and f'`{ARCH}`' in body and 'RegNetX-200MF' in body
    assert meta['library_name'] == library and 'image-classification' in meta['tags'] and 'regzoo' in meta['tags']
    assert meta['license'] == weight.license == 'mit'
    assert meta['datasets'] == ['imagenet-1k']
    assert meta['base_model'] == weight.hf_hub_id
    stats = meta['regzoo']
    assert stats['architecture'] == ARCH and stats['weights'] == f'{ARCH}.{TAG}' and stats['format'] == format
    assert stats['params'] == regzoo.complexity(ARCH)['params']
    assert stats['image_size'] == list(weight.input_size[1:])
    assert 'flops' not in stats  # the zoo layer cannot count them; push_to_hub's card has them
    [result] = meta['model-index'][0]['results']
    metrics = {m['name']: m['value'] for m in result['metrics']}
    assert metrics == {'top-1 accuracy': published.top1, 'top-5 accuracy': published.top5}
    # the Hub's own parser reads the metadata and the model-index
    from huggingface_hub import ModelCard
    data = ModelCard(text).data
    assert data.library_name == library and data.license == 'mit'
    assert [(r.dataset_type, r.metric_value) for r in data.eval_results] == [
        ('imagenet-1k', published.top1), ('imagenet-1k', published.top5)]
    assert 'Designing Network Design Spaces' in body and '@InProceedings{Radosavovic2020' in body


@pytest.mark.parametrize('format', ['timm', 'hf'])
def test_card_usage_code_runs_as_written(imagenet_model, format, tmp_path, monkeypatch, capsys):
    """Every python block of the card, each in a fresh namespace, in a folder holding only image.jpg."""
    # the weight at eval settings of its own: the card's code must apply them (from timm's config.json, or
    # written into the code for HF's, which keeps none)
    model = regzoo.create_model(f'{ARCH}.{TAG}', pretrained=True, pretrained_cfg_overlay=EVAL_96).eval()
    out = regzoo.save_pretrained(model, tmp_path / 'saved', format=format)
    blocks = python_blocks((out / 'README.md').read_text())
    work = tmp_path / 'work'
    work.mkdir()
    write_image(work)
    monkeypatch.chdir(work)
    namespaces = []
    for i, block in enumerate(blocks):
        assert f"checkpoint_path='{out}'" in block or 'regzoo' not in block
        namespaces.append({})
        exec(compile(block, f'README.md block {i}', 'exec'), namespaces[-1])
    printed = capsys.readouterr().out.splitlines()
    check_top5(printed[:5], model)  # class names from timm's config.json, or from HF's id2label
    top5 = [[p.index for p in regzoo.predict(m, IMAGE, topk=5)[0]] for m in (model, imagenet_model)]
    assert top5[0] != top5[1]  # the eval settings change the answer, so the check above covers them
    features = regzoo.create_model(ARCH, features_only=True).feature_info
    assert printed[5] == f'{features.channels()} {features.reduction()}'
    assert printed[-1] == f'(1, {model.num_features})'  # the pooled embedding
    # the other library's block (timm's local-dir:, transformers' from_pretrained) gives the same network
    other = namespaces[-1]['model'].eval()
    with torch.no_grad():
        theirs = other(X)
        theirs = theirs.logits if hasattr(theirs, 'logits') else theirs
        assert (theirs - model(X)).abs().max().item() <= 1e-4


def test_card_of_a_sharded_save(imagenet_model, tmp_path, monkeypatch, capsys):
    """timm reads one weights file only: a sharded timm-layout folder is regzoo's, and its card says so."""
    out = regzoo.save_pretrained(imagenet_model, tmp_path / 'saved', format='timm', max_shard_size='2MB')
    assert (out / 'model.safetensors.index.json').is_file() and not (out / 'model.safetensors').exists()
    text = (out / 'README.md').read_text()
    meta, body = split_card(text)
    assert meta['library_name'] == 'regzoo' and 'timm.create_model' not in text
    assert 'model.safetensors.index.json' in body
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path)
    exec(python_blocks(text)[0], {})
    check_top5(capsys.readouterr().out.splitlines(), imagenet_model)


def test_card_of_a_fine_tuned_head_claims_no_results(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    model = randomize_bn(regzoo.create_model('regnety_002.pycls_in1k', num_classes=7)).eval()
    out = regzoo.save_pretrained(model, tmp_path / 'saved', format='timm')
    text = (out / 'README.md').read_text()
    meta, body = split_card(text)
    assert 'model-index' not in meta and 'datasets' not in meta and 'base_model' not in meta
    assert meta['regzoo']['num_classes'] == 7 and 'weights' not in meta['regzoo']
    assert meta['regzoo']['params'] == regzoo.complexity('regnety_002', num_classes=7)['params']
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path)
    exec(python_blocks(text)[0], {})
    check_top5(capsys.readouterr().out.splitlines(), model)


def test_seer_cards_cite_seer_and_name_its_license():
    with torch.device('meta'):  # the card reads the cfg and counts parameters: nothing is allocated
        finetuned = regzoo.create_model('regnety_320.seer_ft_in1k')
        trunk = regzoo.create_model('regnety_320.seer')
    weight = regzoo.get_pretrained_cfg('regnety_320.seer_ft_in1k')
    meta, body = split_card(regzoo.model_card(finetuned))
    assert meta['license'] == 'other' and meta['license_name'] == weight.license == 'seer-license'
    assert meta['license_link'] == weight.origin_url
    assert '@article{goyal2021self' in body and '@InProceedings{Radosavovic2020' in body
    assert 'https://arxiv.org/abs/2103.01988' in body and 'SEER' in body
    assert meta['regzoo']['image_size'] == list(weight.input_size[1:]) == [384, 384]
    meta, body = split_card(regzoo.model_card(trunk))
    assert 'model-index' not in meta and '### Image Classification' not in body  # a trunk: no classifier
    assert meta['regzoo']['num_classes'] == 0 and '@article{goyal2021self' in body


def test_an_existing_readme_is_kept_unless_regzoo_wrote_it(tmp_path, caplog):
    first = regzoo.create_model('regnetx_002', num_classes=3)
    second = regzoo.create_model('regnetx_002', num_classes=4)
    readme = tmp_path / 'README.md'
    regzoo.save_pretrained(first, tmp_path)
    assert split_card(readme.read_text())[0]['regzoo']['num_classes'] == 3
    regzoo.save_pretrained(second, tmp_path)  # regzoo's own card: regenerated for the new weights
    assert split_card(readme.read_text())[0]['regzoo']['num_classes'] == 4
    edited = readme.read_text().replace(CARD_MARKER + '\n', '') + '\nMy notes.\n'
    readme.write_text(edited)  # the user claimed it
    with caplog.at_level('WARNING'):
        regzoo.save_pretrained(first, tmp_path)
    assert readme.read_text() == edited and 'kept the existing README.md' in caplog.text
    readme.unlink()
    regzoo.save_pretrained(first, tmp_path, card=False)
    assert not readme.exists()


# ------------------------------------------------------------------------------------------------- push_to_hub

def test_prepared_upload_holds_weights_config_and_card(imagenet_model, tmp_path):
    repo_id = 'someone/regnetx_002-test'
    out = prepare_upload(imagenet_model, tmp_path / 'upload', repo_id)
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == ARCH and config['num_classes'] == 1000
    again = regzoo.create_model(ARCH, checkpoint_path=out).eval()
    with torch.no_grad():
        assert torch.equal(again(X), imagenet_model(X))
    text = (out / 'README.md').read_text()
    meta, body = split_card(text)
    assert f'# Model card for {repo_id}' in body and meta['model-index'][0]['name'] == repo_id
    cx = regzoo.complexity(ARCH)
    assert {k: meta['regzoo'][k] for k in ('flops', 'params', 'acts')} == cx
    assert f'{cx["flops"] / 1e9:.2f}' in body
    for block in python_blocks(text):
        assert 'checkpoint_path' not in block
    assert f"MODEL = 'hf-hub:{repo_id}'" in python_blocks(text)[0]
    assert f"timm.create_model('hf-hub:{repo_id}', pretrained=True)" in text


def test_prepared_upload_counts_the_model_as_built(tmp_path):
    model = regzoo.create_model('regnety_002', num_classes=10, in_chans=1, output_stride=16, act='silu')
    meta, _ = split_card((prepare_upload(model, tmp_path, 'me/y002') / 'README.md').read_text())
    measured = regzoo.measure_complexity(model, 224, in_chans=1)  # forward hooks on the built model
    assert {k: meta['regzoo'][k] for k in ('flops', 'params', 'acts')} == measured
    assert meta['library_name'] == 'regzoo'  # another activation: not timm's regnety_002 any more


def test_timm_library_claim_holds_for_timm_kwargs(tmp_path, monkeypatch):
    """Head size, input channels and output stride are timm kwargs (config.json model_args): the card says
    library_name timm, and its timm code builds the same network."""
    torch.manual_seed(0)
    model = randomize_bn(regzoo.create_model('regnety_002', num_classes=10, in_chans=1, output_stride=16)).eval()
    text = (regzoo.save_pretrained(model, tmp_path, format='timm') / 'README.md').read_text()
    assert split_card(text)[0]['library_name'] == 'timm'
    namespace = {}
    exec([b for b in python_blocks(text) if 'timm.create_model' in b][0], namespace)
    x = X[:, :1]
    with torch.no_grad():
        assert (namespace['model'].eval()(x) - model(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize('offline', [True, False])
def test_push_without_a_hub_fails_at_once(offline, tmp_path, monkeypatch):
    model = regzoo.create_model(ARCH)
    attempts = refuse_network(monkeypatch)
    if offline:
        monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    else:
        monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
        monkeypatch.delenv('TRANSFORMERS_OFFLINE', raising=False)
        from huggingface_hub import constants
        if constants.HF_HUB_OFFLINE:
            pytest.skip('huggingface_hub was imported with HF_HUB_OFFLINE set')
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    with pytest.raises(HubUnreachableError, match=r"cannot reach the Hugging Face Hub to upload 'me/x'") as info:
        regzoo.push_to_hub(model, 'me/x')
    text = str(info.value)
    assert ('HF_HUB_OFFLINE is set' in text) if offline else ('cannot connect to' in text)
    assert 'prepare_upload' in text and '`hf upload me/x DIR`' in text
    assert len(attempts) == (0 if offline else 1)  # one probe, no retries
    assert not any(tmp_path.iterdir())  # nothing was saved


def test_push_rejects_bad_arguments_before_any_network(monkeypatch):
    attempts = refuse_network(monkeypatch)
    model = regzoo.create_model(ARCH)
    with pytest.raises(ValueError, match=r"repo_id 'not a repo' is not a Hub repo id"):
        regzoo.push_to_hub(model, 'not a repo')
    with pytest.raises(ValueError, match=r"unknown format 'onnx'"):
        regzoo.push_to_hub(model, 'me/x', format='onnx')
    with pytest.raises(TypeError, match=r'push_to_hub needs a regzoo\.RegNet, got FeatureListNet'):
        regzoo.push_to_hub(regzoo.create_model(ARCH, features_only=True), 'me/x')
    assert attempts == []


# ------------------------------------------------------------------------------------------ the hf-hub: form

@pytest.mark.parametrize('format', ['timm', 'hf'])
def test_hub_card_usage_runs_from_an_offline_cache(imagenet_model, format, tmp_path, monkeypatch):
    """The card of a pushed repo, its code as written (in a fresh interpreter: huggingface_hub reads its cache
    location at import), on the repo laid out in an HF cache, offline."""
    if importlib.util.find_spec('regzoo.zoo.hub_names') is None:
        pytest.skip("create_model('hf-hub:...') is not supported yet (regzoo/zoo/hub_names.py, issue 15)")
    repo_id = 'someone/regnetx_002-test'
    model = regzoo.create_model(f'{ARCH}.{TAG}', pretrained=True, pretrained_cfg_overlay=EVAL_96).eval()
    out = prepare_upload(model, tmp_path / 'upload', repo_id, format=format)
    cache = tmp_path / 'cache'
    populate_hub_cache(cache, repo_id, {p.name: p.read_bytes() for p in out.iterdir()})
    write_image(tmp_path)
    code = '\n'.join(python_blocks((out / 'README.md').read_text()))
    env = {**os.environ, 'HF_HUB_CACHE': str(cache), 'HF_HUB_OFFLINE': '1', 'TORCH_HOME': str(tmp_path / 'torch')}
    run = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    monkeypatch.chdir(tmp_path)
    check_top5(run.stdout.splitlines()[:5], model)
