"""Predict: the packaged ImageNet labels, ``regzoo.predict`` and ``python -m regzoo.cli.predict``, the README example.

The fine-tuned case is a checkpoint folder whose config.json names its classes (timm's top-level
``label_names``, as a train.py run writes them) in an order other than the sorted folders, with a head fitted
to the images, so a wrong index -> name mapping shows. The ImageNet case is a weight in a local HF cache in
timm's layout, checked against timm's own model, transform and labels.
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import timm.data
import torch
from helpers import cache_timm_weights, randomize_bn
from PIL import Image
from safetensors.torch import save_file

import regzoo
from regzoo.data.datasets import load_rgb
from regzoo.data.labels import label_descriptions, label_names
from regzoo.data.synthetic import synthetic_image, write_image_folder
from regzoo.deploy.benchmarking import fit_probe_head
from regzoo.eval.predict import Prediction, checkpoint_label_names, find_images
from regzoo.eval.transform import eval_transform

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ['tulip', 'daisy', 'rose']  # the classifier's order; the folders sort as daisy, rose, tulip


def _run(*argv: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'regzoo.cli.predict', *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=300)


# ---------------------------------------------------------------------------------------- packaged labels

def test_packaged_imagenet_1k_labels_equal_timms_info():
    info = timm.data.ImageNetInfo('imagenet-1k')
    assert list(label_names('imagenet-1k')) == info.label_names()
    assert list(label_descriptions('imagenet-1k')) == info.label_descriptions()
    assert list(label_descriptions('imagenet-1k', detailed=True)) == info.label_descriptions(detailed=True)
    assert label_descriptions('imagenet-1k')[281] == 'tabby, tabby cat'


def test_packaged_file_is_what_the_generator_writes():
    sys.path.insert(0, str(ROOT / 'results'))
    try:
        import build_labels
    finally:
        sys.path.remove(str(ROOT / 'results'))
    packaged = (ROOT / 'regzoo' / 'data' / 'imagenet-1k.tsv').read_text(encoding='utf-8')
    assert packaged == build_labels.build(), 'regenerate with: python results/build_labels.py'


def test_imagenet_1k_labels_load_without_timm(tmp_path):
    code = ('import sys; from regzoo.data.labels import label_names, label_descriptions; '
            "n = label_names('imagenet-1k'); d = label_descriptions('imagenet-1k'); "
            "print(len(n), n[0], d[0], 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == '1000 n01440764 tench, Tinca tinca False'


def test_larger_label_sets_still_come_from_timm():
    assert label_names('imagenet-12k') == tuple(timm.data.ImageNetInfo('imagenet-12k').label_names())
    with pytest.raises(ValueError, match="unknown label set 'imagenet-2k'"):
        label_names('imagenet-2k')


# ---------------------------------------------------------------------------------------- a fine-tuned run

@pytest.fixture(scope='module')
def finetuned(tmp_path_factory) -> tuple[Path, Path]:
    """(image folder, checkpoint folder): a 3-class regnetx_002 whose head is fitted to the folder's images, saved
    with a config.json that names its classes (CLASSES order) and an eval size of 64 px."""
    base = tmp_path_factory.mktemp('predict')
    images = write_image_folder(base / 'images', CLASSES, 4, size=(40, 56), seed=0, exts=('.png', '.jpg'))
    ckpt = base / 'ckpt'
    torch.manual_seed(0)
    regzoo.save_pretrained(randomize_bn(regzoo.create_model('regnetx_002', num_classes=3)), ckpt, format='timm')
    config = json.loads((ckpt / 'config.json').read_text())
    config['label_names'] = CLASSES  # where timm's writer (and train.py's run config) puts a model's class names
    config['pretrained_cfg'].update(input_size=[3, 64, 64], interpolation='bilinear', crop_pct=1.0)
    (ckpt / 'config.json').write_text(json.dumps(config))
    model = regzoo.create_model('regnetx_002', checkpoint_path=ckpt).eval()
    assert model.pretrained_cfg.input_size == (3, 64, 64)
    paths = find_images([images])
    transform = eval_transform(model)
    x = torch.stack([transform(load_rgb(p)) for p in paths])
    y = torch.tensor([CLASSES.index(Path(p).parent.name) for p in paths])
    fit_probe_head(model, x, y, batch_size=16)
    save_file(model.state_dict(), str(ckpt / 'model.safetensors'))
    return images, ckpt


def test_cli_prints_the_runs_class_names(finetuned):
    images, ckpt = finetuned
    out = _run(str(images), '--model', 'regnetx_002', '--checkpoint', str(ckpt), '--topk', '2', '-b', '5')
    assert out.returncode == 0, out.stderr
    blocks = re.findall(r'^(\S.*)\n((?:  .*\n){2})', out.stdout, flags=re.MULTILINE)
    assert len(blocks) == 12
    for path, lines in blocks:
        first = lines.splitlines()[0].split()
        # '  97.12%      0  tulip': probability, index, label; top-1 is the image's folder
        assert first[-1] == Path(path).parent.name and int(first[1]) == CLASSES.index(first[-1])


def test_cli_json_parses_and_unreadable_images_are_skipped(finetuned, tmp_path):
    images, ckpt = finetuned
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'not a jpeg')
    good = sorted((images / 'rose').iterdir())[0]
    out = _run(str(good), str(bad), '--model', 'regnetx_002', '--checkpoint', str(ckpt), '--json', '-j', '0')
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc['topk'] == 5 and [r['image'] for r in doc['results']] == [str(good)]
    preds = doc['results'][0]['predictions']
    assert len(preds) == 3  # top-k is capped at the number of classes
    assert preds[0]['label'] == preds[0]['name'] == 'rose' and preds[0]['index'] == 2
    assert sum(p['probability'] for p in preds) == pytest.approx(1.0, abs=1e-5)
    assert doc['skipped'] == [{'image': str(bad), 'error': doc['skipped'][0]['error']}]
    assert f'skipped unreadable image {bad}' in out.stderr
    # nothing readable at all: exit 2, one error line after the report of the skipped image
    out = _run(str(bad), '--model', 'regnetx_002', '--checkpoint', str(ckpt))
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == 'python -m regzoo.cli.predict: error: none of the 1 image(s) could be read'


def test_cli_on_a_train_py_run_folder(tmp_path):
    """The user path: train.py on a class folder tree, then predict with the run folder alone (arch, eval settings
    and class names come from the run's config.json)."""
    data = write_image_folder(tmp_path / 'data', CLASSES, {'train': 4, 'val': 2}, size=(40, 56), seed=1)
    argv = ['--data-dir', str(data), '--model', 'regnetx_002', '--epochs', '1', '-b', '4', '--img-size', '32',
            '-j', '0', '--output', str(tmp_path / 'runs'), '--experiment', 'x']
    train = subprocess.run([sys.executable, str(ROOT / 'train.py'), *argv], capture_output=True, text=True,
                           cwd=tmp_path, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    out = _run(str(data / 'val'), '--checkpoint', str(tmp_path / 'runs' / 'x'), '--topk', '3', '--json', '-j', '0')
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc['results']) == 6
    for result in doc['results']:
        assert sorted(p['label'] for p in result['predictions']) == sorted(CLASSES)
        for p in result['predictions']:  # the run's classifier order: the sorted class folders
            assert p['label'] == sorted(CLASSES)[p['index']]


def test_library_predict_with_the_runs_labels(finetuned):
    images, ckpt = finetuned
    model = regzoo.create_model('regnetx_002', checkpoint_path=ckpt).train()
    labels = checkpoint_label_names(ckpt)
    assert labels == tuple(CLASSES)
    path = sorted((images / 'daisy').iterdir())[0]
    [by_path], [by_image] = regzoo.predict(model, path, labels=labels), regzoo.predict(model, [load_rgb(path)],
                                                                                       labels=labels)
    assert by_path == by_image and len(by_path) == 3  # topk capped at the class count
    assert by_path[0] == Prediction(1, 'daisy', by_path[0].probability, 'daisy')
    assert [p.probability for p in by_path] == sorted((p.probability for p in by_path), reverse=True)
    assert model.training, 'predict gives the model back in the mode it had'
    # without labels=: a model built from the checkpoint carries its class names in its pretrained_cfg
    assert model.pretrained_cfg.label_names == tuple(CLASSES)
    assert regzoo.predict(model, path) == [by_path]
    with pytest.raises(ValueError, match='2 labels for a 3-class classifier'):
        regzoo.predict(model, path, labels=['a', 'b'])
    with pytest.raises(OSError, match='cannot read the image'):
        regzoo.predict(model, [path, images / 'nope.png'])


def test_one_channel_models_read_greyscale(finetuned):
    images, _ = finetuned
    torch.manual_seed(0)
    model = regzoo.create_model('regnetx_002', in_chans=1, num_classes=4).eval()
    path = sorted((images / 'rose').iterdir())[0]
    [preds] = regzoo.predict(model, path, topk=2)
    transform = eval_transform(model)
    x = transform(load_rgb(path).convert('L')).unsqueeze(0)
    assert x.shape[1] == 1
    with torch.no_grad():
        expected = model(x).softmax(-1).topk(2)
    assert [p.index for p in preds] == expected.indices[0].tolist()
    assert [p.label for p in preds] == [str(i) for i in expected.indices[0].tolist()]  # no names: indices


def test_regzoo_predict_stays_the_function_after_every_submodule_is_imported(finetuned):
    """``regzoo.predict`` is the library function; the command line is ``regzoo.cli.predict`` (no module named
    ``regzoo.predict`` exists to shadow it), so importing every submodule leaves it a plain function that predicts."""
    import importlib
    import pkgutil
    import types

    from regzoo.eval.predict import predict
    for info in pkgutil.walk_packages(regzoo.__path__, 'regzoo.'):
        importlib.import_module(info.name)
    assert regzoo.predict is predict and isinstance(regzoo.predict, types.FunctionType)
    package = Path(regzoo.__file__).parent
    assert not (package / 'predict.py').exists() and not (package / 'predict').exists()
    images, ckpt = finetuned
    model = regzoo.create_model('regnetx_002', checkpoint_path=ckpt)
    [preds] = regzoo.predict(model, sorted((images / 'tulip').iterdir())[0], topk=1, labels=CLASSES)
    assert preds[0].label == 'tulip'


# ---------------------------------------------------------------------------------------- ImageNet weights

@pytest.fixture(scope='module')
def imagenet_weight(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """(HF cache holding timm/regnetx_002.pycls_in1k in timm's hub layout, the timm model it holds)."""
    cache = tmp_path_factory.mktemp('hf') / 'hub'
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model('regnetx_002.pycls_in1k')).eval()
    cache_timm_weights(cache, ref, 'timm/regnetx_002.pycls_in1k')
    return cache, ref


def test_cli_pretrained_imagenet_weight_prints_imagenet_names(imagenet_weight, tmp_path):
    cache, ref = imagenet_weight
    paths = []
    for k in range(2):
        paths.append(tmp_path / f'img{k}.jpg')
        synthetic_image(k, 2, (50, 70), np.random.default_rng(k)).save(paths[-1])
    env = {'HF_HUB_CACHE': str(cache), 'HF_HUB_OFFLINE': '1', 'TORCH_HOME': str(tmp_path / 'torch')}
    out = _run(*map(str, paths), '--model', 'regnetx_002.pycls_in1k', '--pretrained', '--topk', '3', '--json',
               env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc['weights'] == 'regnetx_002.pycls_in1k'
    # the reference: timm's model, timm's eval transform for its cfg, timm's ImageNet info
    info = timm.data.ImageNetInfo()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=ref))
    for path, result in zip(paths, doc['results']):
        with torch.no_grad():
            probs = ref(transform(Image.open(path).convert('RGB')).unsqueeze(0)).softmax(-1)[0]
        top = probs.topk(3)
        assert [p['index'] for p in result['predictions']] == top.indices.tolist()
        for p, prob in zip(result['predictions'], top.values.tolist()):
            assert p['name'] == info.index_to_label_name(p['index'])
            assert p['label'] == info.index_to_description(p['index'])
            assert p['probability'] == pytest.approx(prob, abs=1e-5)
    text = _run(str(paths[0]), '--model', 'regnetx_002.pycls_in1k', '--pretrained', '--topk', '3', env=env)
    assert text.returncode == 0, text.stderr
    first = doc['results'][0]['predictions'][0]
    assert re.search(rf'^\s+[\d.]+%\s+{first["index"]}\s+{re.escape(first["label"])}$', text.stdout, re.MULTILINE)


def test_readme_classify_example_runs(imagenet_weight, tmp_path, monkeypatch, capsys):
    """The README's "Classify an image" code, as written, on a weight from a local cache and a generated cat.jpg."""
    readme = (ROOT / 'README.md').read_text()
    section = readme.split('## Classify an image', 1)[1].split('\n## ', 1)[0]
    code = re.search(r'```python\n(.*?)```', section, flags=re.DOTALL).group(1)
    assert 'regzoo.predict(' in code
    torch.manual_seed(0)
    weight = randomize_bn(timm.create_model('regnety_032.ra_in1k')).eval()
    cache = tmp_path / 'hub'
    cache_timm_weights(cache, weight, 'timm/regnety_032.ra_in1k')
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.chdir(tmp_path)
    synthetic_image(0, 3, (60, 80), np.random.default_rng(0)).save('cat.jpg')
    exec(compile(code, 'README.md', 'exec'), {'regzoo': regzoo, 'torch': torch})
    lines = capsys.readouterr().out.splitlines()
    descriptions = set(label_descriptions('imagenet-1k'))
    assert len(lines) == 5
    for line in lines:
        probability, label = line.split('  ', 1)
        assert 0 <= float(probability) <= 1 and label in descriptions


# ---------------------------------------------------------------------------------- --fast / --int8 / --output

def _predict_main(capsys, *argv: str) -> tuple[int, str, str]:
    from regzoo.cli.predict import main
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_fast_reports_its_top1_agreement_with_fp32(finetuned, capsys):
    images, ckpt = finetuned
    rc, out, err = _predict_main(capsys, str(images), '--checkpoint', str(ckpt), '--fast', '--topk', '1', '-j', '0')
    assert rc == 0, err
    # the fast path is the fp32 function (BN folded), so on a fitted head every image keeps its class
    assert out.splitlines()[-1] == 'top-1 agreement of the fast model with fp32: 100.00% (12/12 images)'
    tops = re.findall(r'^(\S.*)\n +\S+% +\d+ +(\S+)$', out, flags=re.MULTILINE)
    assert len(tops) == 12 and all(label == Path(path).parent.name for path, label in tops)


def test_int8_json_and_csv_output_hold_the_same_predictions(finetuned, tmp_path, capsys):
    pytest.importorskip('torchao', reason="--int8 needs the [quantize] extra")
    images, ckpt = finetuned
    bad = tmp_path / 'broken.png'
    bad.write_bytes(b'not a png')
    out_csv = tmp_path / 'preds.csv'
    rc, out, err = _predict_main(capsys, str(images), str(bad), '--checkpoint', str(ckpt), '--int8',
                                 '--calibration-dir', str(images), '--json', '--output', str(out_csv), '-j', '0')
    assert rc == 0, err
    doc = json.loads(out)
    assert doc['variant'] == 'int8' and doc['topk'] == 5
    agreement = doc['top1_agreement_with_fp32']
    assert agreement['images'] == 12 and agreement['fraction'] == agreement['same'] / 12 >= 11 / 12
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == ['image', 'rank', 'index', 'label', 'probability', 'name', 'error']
    expected = [{'image': r['image'], 'rank': str(rank), 'index': str(p['index']), 'label': p['label'],
                 'probability': str(p['probability']), 'name': p['name'], 'error': ''}
                for r in doc['results'] for rank, p in enumerate(r['predictions'], 1)]
    assert rows[:-1] == expected and len(expected) == 12 * 3  # top-k capped at the 3 classes
    assert rows[-1]['image'] == str(bad) and rows[-1]['rank'] == '' and rows[-1]['error']
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []  # no temp file left


def test_output_json_is_the_json_document(finetuned, tmp_path, capsys):
    images, ckpt = finetuned
    out_json = tmp_path / 'preds.json'
    rc, out, err = _predict_main(capsys, str(images), '--checkpoint', str(ckpt), '--output', str(out_json), '-j', '0')
    assert rc == 0 and f'wrote 12 prediction(s) to {out_json}' in err
    rc, printed, _ = _predict_main(capsys, str(images), '--checkpoint', str(ckpt), '--json', '-j', '0')
    assert json.loads(out_json.read_text()) == json.loads(printed)
    assert json.loads(printed)['variant'] == 'fp32' and 'top1_agreement_with_fp32' not in json.loads(printed)


@pytest.mark.parametrize('argv, message', [
    (['--output', 'p.txt'], '--output p.txt: use a .csv or .json file name'),
    (['--int8'], '--int8 needs --calibration-dir DIR'),
    (['--int8', '--calibration-dir', 'missing'], '--calibration-dir: missing does not exist or is not a folder'),
    (['--calibration-dir', '.'], '--calibration-dir and --calibration-images need --int8'),
    (['--fast', '--int8'], 'not allowed with argument'),
    (['--int8', '--calibration-dir', '{images}', '--device', 'cuda'], '--int8 runs on the CPU'),
])
def test_fast_int8_and_output_flag_errors(finetuned, argv, message, capsys):
    images, ckpt = finetuned
    argv = [a.format(images=images) for a in argv]
    rc, _, err = _predict_main(capsys, str(images), '--checkpoint', str(ckpt), *argv)
    assert rc == 2 and message in err and err.count('\n') == 1, err
