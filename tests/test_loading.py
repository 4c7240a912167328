"""Weight loading: local files/dirs, the HF hub cache (real huggingface_hub, offline), URL fallback, and the errors.

Reference weights are timm's (random init, BN stats randomised), saved the way each source ships them.
"""
import argparse
import hashlib
import logging

import pytest
import timm
import torch
import torchvision
from helpers import offline_caches, populate_hub_cache, randomize_bn, refuse_network
from safetensors.torch import save_file
from timm.models._hub import save_for_hf

import regzoo
from regzoo.models.layers import init_classifier
from regzoo.zoo.fetch import WeightsUnavailableError
from regzoo.zoo.applying import adapt_input_conv
from regzoo.zoo.loading import CheckpointError

ARCH = 'regnetx_002'
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))



@pytest.fixture(scope='module')
def ref():
    torch.manual_seed(0)
    return randomize_bn(timm.create_model(ARCH)).eval()


@pytest.fixture(scope='module')
def ref_logits(ref):
    with torch.no_grad():
        return ref(X)


@pytest.fixture(scope='module')
def st_file(ref, tmp_path_factory):
    path = tmp_path_factory.mktemp('st') / 'weights.safetensors'
    save_file(ref.state_dict(), path)
    return path


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """An empty HF cache and torch hub dir under tmp_path, offline, read by our code at call time."""
    offline_caches(tmp_path, monkeypatch)
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Records and refuses every name lookup and connection (the OS boundary, not our code)."""
    return refuse_network(monkeypatch)


def logits(model):
    with torch.no_grad():
        return model.eval()(X)


# ------------------------------------------------------------------------------------------ local files and dirs

@pytest.mark.parametrize('kind', ['safetensors', 'pth', 'pth_container', 'bin_module_prefix'])
def test_checkpoint_path_file(kind, ref, ref_logits, tmp_path):
    sd = ref.state_dict()
    path = tmp_path / {'safetensors': 'w.safetensors', 'pth': 'w.pth', 'pth_container': 'c.pth',
                       'bin_module_prefix': 'w.bin'}[kind]
    if kind == 'safetensors':
        save_file(sd, path)
    elif kind == 'pth':
        torch.save(sd, path)
    elif kind == 'pth_container':  # a timm train.py checkpoint, args as a plain dict
        torch.save({'epoch': 3, 'state_dict': sd, 'args': {'lr': 0.1}}, path)
    else:
        torch.save({f'module.{k}': v for k, v in sd.items()}, path)
    model = regzoo.create_model(ARCH, checkpoint_path=str(path))
    assert torch.equal(logits(model), ref_logits)


@pytest.mark.parametrize('layout', ['timm_dir', 'bin_dir', 'single_pth_dir'])
def test_checkpoint_path_dir(layout, ref, ref_logits, tmp_path):
    sd = ref.state_dict()
    if layout == 'timm_dir':  # timm's own hub writer: config.json + model.safetensors + pytorch_model.bin
        save_for_hf(ref, str(tmp_path), safe_serialization='both')
    elif layout == 'bin_dir':
        torch.save(sd, tmp_path / 'pytorch_model.bin')
    else:
        torch.save(sd, tmp_path / 'regnetx_002-epoch9.pth')
        (tmp_path / 'notes.txt').write_text('not weights')
    model = regzoo.create_model(ARCH, checkpoint_path=tmp_path)
    assert torch.equal(logits(model), ref_logits)


def test_saved_dirs_restore_their_settings(tmp_path):
    """timm's and our own hub layout record in_chans and the eval cfg; checkpoint_path= rebuilds them."""
    torch.manual_seed(0)
    grey = randomize_bn(timm.create_model('regnetx_002.pycls_in1k', in_chans=1, num_classes=5)).eval()
    save_for_hf(grey, str(tmp_path / 'timm'), safe_serialization=True)
    g = X[:, :1]
    with torch.no_grad():
        expected = grey(g)
    ours = regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'timm').eval()
    assert (ours.in_chans, ours.num_classes) == (1, 5)
    assert ours.pretrained_cfg.tag == 'pycls_in1k' and ours.pretrained_cfg.crop_pct == 0.875
    with torch.no_grad():
        assert torch.equal(ours(g), expected)
    regzoo.save_pretrained(ours, tmp_path / 'ours', format='timm')
    again = regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'ours').eval()
    assert (again.in_chans, again.num_classes) == (1, 5)
    with torch.no_grad():
        assert torch.equal(again(g), expected)


def test_load_checkpoint_function_and_overlay_file(ref_logits, st_file):
    model = regzoo.create_model(ARCH)
    regzoo.load_checkpoint(model, st_file)
    assert torch.equal(logits(model), ref_logits)
    model = regzoo.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(st_file)))
    assert torch.equal(logits(model), ref_logits)
    assert model.pretrained_cfg.name == 'regnetx_002.pycls_in1k'


def test_torchvision_checkpoint_through_loading(tv_file):
    path, _, expected = tv_file
    model = regzoo.create_model('regnety_004', checkpoint_path=path)
    assert (logits(model) - expected).abs().max() <= 1e-4


# ------------------------------------------------------------------------------------------ HF hub cache

def test_hub_cache_offline_prefers_safetensors(ref, ref_logits, hub_env, no_network):
    other = randomize_bn(timm.create_model(ARCH), seed=5).state_dict()
    bin_path = hub_env / 'other.bin'
    torch.save(other, bin_path)
    save_file(ref.state_dict(), hub_env / 'w.safetensors')
    populate_hub_cache(hub_env / 'hf' / 'hub', 'timm/regnetx_002.pycls_in1k', {
        'model.safetensors': (hub_env / 'w.safetensors').read_bytes(),
        'pytorch_model.bin': bin_path.read_bytes(),
    })
    model = regzoo.create_model(ARCH, pretrained=True)  # default tag: pycls_in1k
    assert torch.equal(logits(model), ref_logits)
    assert no_network == []


def test_hub_cache_bin_only_and_warm_cache_online_makes_no_call(ref, ref_logits, hub_env, no_network, monkeypatch):
    bin_path = hub_env / 'w.bin'
    torch.save(ref.state_dict(), bin_path)
    populate_hub_cache(hub_env / 'hf' / 'hub', 'timm/regnetx_002.pycls_in1k',
                       {'pytorch_model.bin': bin_path.read_bytes()})
    monkeypatch.delenv('HF_HUB_OFFLINE')  # online: the warm cache must still answer without a connection
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        pytest.skip('huggingface_hub was imported with HF_HUB_OFFLINE set')
    model = regzoo.create_model(ARCH, pretrained=True)
    assert torch.equal(logits(model), ref_logits)
    assert no_network == []


def test_offline_miss_names_repo_and_cache(hub_env, no_network):
    with pytest.raises(WeightsUnavailableError) as info:
        regzoo.create_model('regnety_032.ra_in1k', pretrained=True)
    text = str(info.value)
    assert 'regnety_032.ra_in1k' in text and 'HF_HUB_OFFLINE' in text
    assert "'timm/regnety_032.ra_in1k'" in text and 'model.safetensors' in text
    assert str(hub_env / 'hf' / 'hub') in text  # the HF cache searched
    assert str(hub_env / 'torch' / 'hub' / 'checkpoints' / 'regnety_032_ra-7f2439f9.pth') in text  # the URL cache
    assert 'checkpoint_path=' in text
    assert no_network == []


def test_tv_in1k_offline_miss_names_only_the_url(hub_env, no_network):
    with pytest.raises(WeightsUnavailableError, match=r'regnet_y_400mf-c65dace8\.pth'):
        regzoo.create_model('regnety_004.tv_in1k', pretrained=True)


# ------------------------------------------------------------------------------------------ URL fallback

@pytest.fixture(scope='module')
def tv_file(tmp_path_factory):
    """torchvision regnet_y_400mf weights, named the torch.hub way (name-<sha256 prefix>.pth), and its logits."""
    torch.manual_seed(0)
    tv = randomize_bn(torchvision.models.regnet_y_400mf()).eval()
    raw = tmp_path_factory.mktemp('tv') / 'raw.pth'
    torch.save(tv.state_dict(), raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    path = raw.with_name(f'regnet_y_400mf-{digest[:8]}.pth')
    raw.rename(path)
    with torch.no_grad():
        return path, digest, tv(X)


@pytest.fixture
def url_file(tv_file, tmp_path):
    """``tv_file`` served from a file:// URL of this test's own (tests may delete it)."""
    path, digest, expected = tv_file
    served = tmp_path / 'served' / path.name
    served.parent.mkdir()
    served.write_bytes(path.read_bytes())
    return served, digest, expected


def test_url_fallback_downloads_checks_hash_and_caches(url_file, hub_env, monkeypatch):
    served, digest, expected = url_file
    monkeypatch.delenv('HF_HUB_OFFLINE')
    overlay = dict(hf_hub_id=None, url=served.as_uri(), sha256=digest[:8])
    model = regzoo.create_model('regnety_004.tv_in1k', pretrained=True, pretrained_cfg_overlay=overlay)
    assert (logits(model) - expected).abs().max() <= 1e-4
    cached = hub_env / 'torch' / 'hub' / 'checkpoints' / served.name
    assert cached.is_file()
    # offline, the cached download answers even though the source is gone
    served.unlink()
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    model = regzoo.create_model('regnety_004.tv_in1k', pretrained=True, pretrained_cfg_overlay=overlay)
    assert (logits(model) - expected).abs().max() <= 1e-4


def test_url_hash_mismatch_is_an_error_and_keeps_nothing(url_file, hub_env, monkeypatch):
    served, digest, _ = url_file
    monkeypatch.delenv('HF_HUB_OFFLINE')
    bad = 'f' * 64 if not digest.startswith('f') else '0' * 64
    overlay = dict(hf_hub_id=None, url=served.as_uri(), sha256=bad)
    with pytest.raises(CheckpointError, match='sha256') as info:
        regzoo.create_model('regnety_004.tv_in1k', pretrained=True, pretrained_cfg_overlay=overlay)
    assert served.as_uri() in str(info.value)
    assert not (hub_env / 'torch' / 'hub' / 'checkpoints' / served.name).exists()


# ------------------------------------------------------------------------------------------ bad files

def test_truncated_and_corrupt_files(st_file, ref, tmp_path):
    data = st_file.read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(data[: len(data) // 2])
    torch.save(ref.state_dict(), tmp_path / 'full.pth')
    pth = (tmp_path / 'full.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(pth[: len(pth) // 2])
    (tmp_path / 'noise.pth').write_bytes(bytes(range(256)) * 10)
    for name in ('cut.safetensors', 'cut.pth', 'noise.pth'):
        with pytest.raises(CheckpointError, match='truncated or corrupt') as info:
            regzoo.create_model(ARCH, checkpoint_path=tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def test_pickle_only_files_are_refused(ref, tmp_path):
    # a train checkpoint that pickles an argparse.Namespace, and a whole pickled module
    torch.save({'state_dict': ref.state_dict(), 'args': argparse.Namespace(lr=0.1)}, tmp_path / 'ns.pth')
    torch.save(ref, tmp_path / 'module.pth')
    for name in ('ns.pth', 'module.pth'):
        with pytest.raises(CheckpointError, match='refusing to load') as info:
            regzoo.create_model(ARCH, checkpoint_path=tmp_path / name)
        assert 'weights_only=True' in str(info.value) and name in str(info.value)


def test_missing_path_and_empty_dir_and_unknown_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'nope.pth')
    (tmp_path / 'readme.txt').write_text('x')
    with pytest.raises(CheckpointError, match='model.safetensors or pytorch_model.bin'):
        regzoo.create_model(ARCH, checkpoint_path=tmp_path)
    save_file({'encoder.weight': torch.zeros(2)}, tmp_path / 'odd.safetensors')
    with pytest.raises(CheckpointError, match='unrecognised checkpoint layout'):
        regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'odd.safetensors')
    with pytest.raises(FileNotFoundError, match='pretrained_cfg_overlay'):
        regzoo.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'gone')))


def test_wrong_arch_names_arch_keys_and_the_match(st_file):
    with pytest.raises(CheckpointError) as info:
        regzoo.create_model('regnetx_004', checkpoint_path=st_file)
    text = str(info.value)
    assert 'does not fit regnetx_004' in text and 'missing from the checkpoint' in text
    assert 'shape mismatches' in text
    assert 's1.b1.conv1.conv.weight checkpoint (24, 32, 1, 1) vs model (32, 32, 1, 1)' in text
    assert 'its shapes match: regnetx_002' in text
    with pytest.raises(CheckpointError, match=r'(?s)does not fit regnety_002.*missing.*s1\.b1\.se\.fc1\.weight'):
        regzoo.create_model('regnety_002', checkpoint_path=st_file)


# ------------------------------------------------------------------------------------------ fitting head and stem

def test_num_classes_reinitialises_head_deterministically(ref, st_file, caplog):
    with caplog.at_level(logging.INFO, logger='regzoo.zoo.applying'):
        a = regzoo.create_model(ARCH, checkpoint_path=st_file, num_classes=10)
    assert 're-initialised' in caplog.text and '1000 classes, the model 10' in caplog.text
    torch.manual_seed(123)  # the global RNG must not matter
    b = regzoo.create_model(ARCH, checkpoint_path=st_file, num_classes=10)
    expected = torch.nn.Linear(a.head.fc.in_features, 10)
    init_classifier(expected)
    for m in (a, b):
        assert torch.equal(m.head.fc.weight, expected.weight) and torch.equal(m.head.fc.bias, expected.bias)
        assert torch.equal(m.stem.conv.weight, ref.stem.conv.weight)
    with torch.no_grad():
        feats = regzoo.create_model(ARCH, checkpoint_path=st_file, num_classes=0).eval()(X)
        assert torch.equal(feats, ref.forward_head(ref.forward_features(X), pre_logits=True))


def test_fine_tuned_checkpoint_keeps_its_head(tmp_path):
    torch.manual_seed(0)
    ft = randomize_bn(timm.create_model(ARCH, num_classes=7)).eval()
    save_file(ft.state_dict(), tmp_path / 'ft.safetensors')
    model = regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'ft.safetensors')
    with torch.no_grad():
        assert model.num_classes == 7 and torch.equal(logits(model), ft(X))


def test_in_chans_one_sums_rgb(ref, st_file, caplog):
    with caplog.at_level(logging.INFO, logger='regzoo.zoo.applying'):
        grey = regzoo.create_model(ARCH, checkpoint_path=st_file, in_chans=1).eval()
    assert 'from 3 to 1 input channels' in caplog.text
    g = X[:, :1]
    with torch.no_grad():
        assert (grey(g) - ref(g.expand(-1, 3, -1, -1))).abs().max() <= 1e-4


@pytest.mark.parametrize('in_chans', [2, 4, 6])
def test_in_chans_more_repeats_and_rescales(ref, st_file, in_chans):
    model = regzoo.create_model(ARCH, checkpoint_path=st_file, in_chans=in_chans)
    w, rgb = model.stem.conv.weight, ref.stem.conv.weight
    assert w.shape[1] == in_chans
    for c in range(in_chans):
        assert torch.allclose(w[:, c], rgb[:, c % 3] * 3 / in_chans)
    if in_chans == 6:  # two copies of an RGB image give the RGB activations
        with torch.no_grad():
            assert (model.eval()(torch.cat([X, X], 1)) - ref(X)).abs().max() <= 1e-4


def test_checkpoints_without_model_args_keep_their_input_channels(tmp_path):
    """issue 11: a plain weights file and an HF directory say their in_chans by the first conv's shape (HF's
    config also as num_channels); create_model builds that, as it takes num_classes from the head."""
    torch.manual_seed(0)
    grey = randomize_bn(timm.create_model(ARCH, in_chans=1, num_classes=10)).eval()
    save_file(grey.state_dict(), tmp_path / 'grey.safetensors')
    regzoo.save_pretrained(regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'grey.safetensors'),
                           tmp_path / 'hf', format='hf')
    g = X[:, :1]
    with torch.no_grad():
        expected = grey(g)
    for path in (tmp_path / 'grey.safetensors', tmp_path / 'hf'):
        model = regzoo.create_model(ARCH, checkpoint_path=path).eval()
        assert (model.in_chans, model.num_classes) == (1, 10)
        with torch.no_grad():
            assert (model(g) - expected).abs().max() <= 1e-5
    hf_cfg = regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'hf').pretrained_cfg
    assert hf_cfg.input_size[0] == len(hf_cfg.mean) == 1 and hf_cfg.label_set is None  # HF labels are only names


@pytest.mark.parametrize('in_chans', [1, 3, 4])
def test_pretrained_cfg_follows_in_chans(in_chans):
    """The eval cfg a model carries feeds it as built: input sizes take in_chans; the RGB mean/std are pooled
    for one grey channel (its conv weight is the sum over RGB) and repeat cyclically for more (as the weight)."""
    weight = regzoo.get_pretrained_cfg('regnety_032.ra_in1k')
    cfg = regzoo.create_model(weight.name, in_chans=in_chans).pretrained_cfg  # cfg only: nothing is downloaded
    assert cfg.input_size == (in_chans, 224, 224) and cfg.test_input_size == (in_chans, 288, 288)
    rgb_mean, rgb_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    if in_chans == 1:
        assert cfg.mean == pytest.approx([sum(rgb_mean) / 3]) and cfg.std == pytest.approx([sum(rgb_std) / 3])
    else:
        assert cfg.mean == tuple(rgb_mean[c % 3] for c in range(in_chans))
        assert cfg.std == tuple(rgb_std[c % 3] for c in range(in_chans))
    assert cfg.label_set is None  # random init: the weight's class names are not this model's (issue 23)
    assert cfg.replace(input_size=weight.input_size, test_input_size=weight.test_input_size, mean=weight.mean,
                       std=weight.std, label_set=weight.label_set) == weight  # nothing else changes


def test_adapt_input_conv_refuses_non_rgb_source():
    assert adapt_input_conv(torch.ones(4, 3, 3, 3), 3).shape == (4, 3, 3, 3)
    with pytest.raises(CheckpointError, match='4 input channels'):
        adapt_input_conv(torch.ones(4, 4, 3, 3), 2)
