"""Checkpoint conversion parity: every foreign layout -> regzoo gives the reference model's logits.

Each test builds the reference implementation with random weights (BN stats randomised too), saves it
in its native format, converts it two ways (``to_regzoo`` + strict ``load_state_dict``, and
``create_model(..., checkpoint_path=...)``) and compares logits to max|d| <= 1e-4.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
import transformers
from helpers import randomize_bn
from safetensors.torch import load_file, save_file

import regzoo
from regzoo.zoo.convert import FORMATS, detect_format, to_regzoo

ATOL = 1e-4


def _input(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.no_grad()
def _assert_loads_like(ref_logits, checkpoint, path, arch, fmt, x=None, **kwargs):
    """Both load paths give ``ref_logits``; ``checkpoint`` is the loaded object, ``path`` the saved file/dir."""
    x = _input() if x is None else x
    state_dict, detected = to_regzoo(checkpoint)
    assert detected == fmt
    model = regzoo.create_model(arch, **kwargs).eval()
    model.load_state_dict(state_dict, strict=True)
    assert _max_diff(model(x), ref_logits) <= ATOL
    via_path = regzoo.create_model(arch, checkpoint_path=str(path), **kwargs).eval()
    assert _max_diff(via_path(x), ref_logits) <= ATOL


# ---------------------------------------------------------------------------------------------- torchvision

@pytest.mark.parametrize('tv_name, arch', [
    ('regnet_y_400mf', 'regnety_004'),
    ('regnet_x_400mf', 'regnetx_004_tv'),  # torchvision's width rounding differs at this size
    ('regnet_y_3_2gf', 'regnety_032'),
])
def test_torchvision(tv_name, arch, tmp_path):
    ref = randomize_bn(getattr(torchvision.models, tv_name)()).eval()
    path = tmp_path / f'{tv_name}.pth'
    torch.save(ref.state_dict(), path)
    with torch.no_grad():
        ref_logits = ref(_input())
    _assert_loads_like(ref_logits, torch.load(path, weights_only=True), path, arch, 'torchvision')


def test_torchvision_reference_script_checkpoint_prefers_ema(tmp_path):
    """torchvision's references save {'model', 'model_ema', ...}; the EMA is an AveragedModel (module. + n_averaged)."""
    raw = randomize_bn(torchvision.models.regnet_y_400mf(), seed=1).eval()
    ema_src = randomize_bn(torchvision.models.regnet_y_400mf(), seed=2).eval()
    ema = torch.optim.swa_utils.AveragedModel(ema_src)
    checkpoint = dict(model=raw.state_dict(), model_ema=ema.state_dict(), epoch=599,
                      optimizer=torch.optim.SGD(raw.parameters(), lr=0.5, momentum=0.9).state_dict())
    assert 'n_averaged' in checkpoint['model_ema']
    _assert_ema_wins_and_raw_loads(checkpoint, tmp_path / 'checkpoint.pth', ema_src, raw, 'regnety_004', 'torchvision')


def _assert_ema_wins_and_raw_loads(checkpoint: dict, path: Path, ema: torch.nn.Module, raw: torch.nn.Module,
                                   arch: str, fmt: str) -> None:
    """Saved and reloaded, ``checkpoint`` loads as ``ema`` by default and as ``raw`` with use_ema=False."""
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    x = _input()
    with torch.no_grad():
        _assert_loads_like(ema(x), loaded, path, arch, fmt)
        model = regzoo.create_model(arch).eval()
        model.load_state_dict(to_regzoo(loaded, use_ema=False)[0], strict=True)
        assert _max_diff(model(x), raw(x)) <= ATOL


# ---------------------------------------------------------------------------------------------- HF transformers

# the published facebook/regnet-{x,y}-002 configs; RegNetConfig() defaults are facebook/regnet-y-040's
HF_CONFIGS = {
    'regnety_002': dict(hidden_sizes=[24, 56, 152, 368], depths=[1, 1, 4, 7], groups_width=8, layer_type='y'),
    'regnetx_002': dict(hidden_sizes=[24, 56, 152, 368], depths=[1, 1, 4, 7], groups_width=8, layer_type='x'),
    'regnety_040': dict(),
}


@pytest.mark.parametrize('arch', [
    'regnety_002', 'regnetx_002', pytest.param('regnety_040', marks=pytest.mark.slow)])  # 040: 20M params, slow init
def test_hf_image_classification(arch, tmp_path):
    torch.manual_seed(0)
    ref = randomize_bn(transformers.RegNetForImageClassification(
        transformers.RegNetConfig(num_labels=10, **HF_CONFIGS[arch]))).eval()
    ref.save_pretrained(tmp_path)  # native: config.json + model.safetensors
    with torch.no_grad():
        ref_logits = ref(_input()).logits
    checkpoint = load_file(tmp_path / 'model.safetensors')
    _assert_loads_like(ref_logits, checkpoint, tmp_path, arch, 'hf', num_classes=10)


def test_hf_backbone_only_regnet_model(tmp_path):
    torch.manual_seed(0)
    ref = randomize_bn(transformers.RegNetModel(transformers.RegNetConfig(**HF_CONFIGS['regnetx_002']))).eval()
    path = tmp_path / 'backbone.safetensors'
    save_file(ref.state_dict(), path)
    with torch.no_grad():
        pooled = ref(_input()).pooler_output.flatten(1)
    _assert_loads_like(pooled, load_file(path), path, 'regnetx_002', 'hf', num_classes=0)


# ---------------------------------------------------------------------------------------------- pycls

# pycls configs/dds_baselines values, written out (not read from our table); AnyNet = torchvision's X-400MF widths
PYCLS_CASES = {
    'regnetx_002': ('regnet', dict(DEPTH=13, W0=24, WA=36.44, WM=2.49, GROUP_W=8)),
    'regnety_002': ('regnet', dict(DEPTH=13, W0=24, WA=36.44, WM=2.49, GROUP_W=8, SE_ON=True, SE_R=0.25)),
    'regnetx_004_tv': ('anynet', dict(DEPTHS=[1, 2, 7, 12], WIDTHS=[32, 64, 160, 400], STRIDES=[2, 2, 2, 2],
                                      BOT_MULS=[1.0] * 4, GROUP_WS=[16] * 4)),
}


@pytest.fixture
def pycls_cfg():
    """pycls keeps its config in a module-level global: reset it around each test."""
    from pycls.core.config import cfg, reset_cfg
    reset_cfg()
    yield cfg
    reset_cfg()


def _build_pycls(cfg, kind: str, fields: dict) -> torch.nn.Module:
    from pycls.models.anynet import AnyNet
    from pycls.models.regnet import RegNet
    cfg.MODEL.NUM_CLASSES = 1000
    section = cfg.REGNET if kind == 'regnet' else cfg.ANYNET
    for key, value in fields.items():
        setattr(section, key, value)
    torch.manual_seed(0)
    return randomize_bn((RegNet if kind == 'regnet' else AnyNet)()).eval()


@pytest.mark.parametrize('arch', list(PYCLS_CASES))
def test_pycls_pyth_bgr_to_rgb(arch, pycls_cfg, tmp_path):
    ref = _build_pycls(pycls_cfg, *PYCLS_CASES[arch])
    path = tmp_path / 'model_epoch_0100.pyth'
    # pycls.core.checkpoint.save_checkpoint's layout
    optimizer = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    torch.save(dict(epoch=99, model_state=ref.state_dict(), optimizer_state=optimizer.state_dict(),
                    cfg=pycls_cfg.dump()), path)
    x_rgb = _input()
    with torch.no_grad():
        ref_logits = ref(x_rgb.flip(1))  # pycls reads BGR
        _assert_loads_like(ref_logits, torch.load(path, weights_only=True), path, arch, 'pycls', x=x_rgb)
        # the flip matters: fed the same RGB tensor, the unflipped reference disagrees
        assert _max_diff(ref(x_rgb), ref_logits) > 100 * ATOL


# ---------------------------------------------------------------------------------------------- timm

@pytest.mark.parametrize('arch', ['regnety_002', 'regnetx_004_tv'])
def test_timm_safetensors(arch, tmp_path):
    ref = randomize_bn(timm.create_model(arch)).eval()
    path = tmp_path / 'model.safetensors'
    save_file(ref.state_dict(), path)
    with torch.no_grad():
        ref_logits = ref(_input())
    _assert_loads_like(ref_logits, load_file(path), path, arch, 'timm')


@pytest.mark.parametrize('ddp', [False, True], ids=['plain', 'ddp-module-prefix'])
def test_timm_train_checkpoint_prefers_ema(ddp, tmp_path):
    """timm's train.py saves {'state_dict', 'state_dict_ema', 'optimizer', ...}; the EMA copy wins."""
    raw = randomize_bn(timm.create_model('regnety_002'), seed=1).eval()
    ema = randomize_bn(timm.create_model('regnety_002'), seed=2).eval()
    prefix = 'module.' if ddp else ''
    checkpoint = dict(
        epoch=10, arch='regnety_002', version=2, metric=71.3,
        state_dict={prefix + k: v for k, v in raw.state_dict().items()},
        state_dict_ema={k: v for k, v in ema.state_dict().items()},
        optimizer=torch.optim.SGD(raw.parameters(), lr=0.1).state_dict())
    _assert_ema_wins_and_raw_loads(checkpoint, tmp_path / 'checkpoint-10.pth.tar', ema, raw, 'regnety_002', 'timm')


# ---------------------------------------------------------------------------------------------- classy / vissl

def _vissl_seer_checkpoint(tv: torch.nn.Module, with_classifier: bool) -> dict:
    """A vissl SEER checkpoint holding ``tv``'s weights.

    classy_vision / vissl can't be installed here, so the fixture renames a torchvision RegNet (itself a
    port of ClassyVision's) to the names of vissl/models/trunks/regnet.py wrapping
    classy_vision/models/anynet.py: ``_feature_blocks.conv1`` = the stem (``stem.0/1``), ``res{S+1}`` =
    ``trunk_output.block{S}`` with blocks ``block{S}-{J}``; shortcut ``proj`` + ``bn``; SE
    ``excitation.0/2``; last conv ``f.c`` + ``f.final_bn``. Heads: SwAV ``projection_head`` + ``prototypes``
    (pre-training) and ``0.clf.0`` (the linear classifier of fine-tuned checkpoints).
    """
    renames = (('proj.0.', 'proj.'), ('proj.1.', 'bn.'), ('f.se.fc1.', 'f.se.excitation.0.'),
               ('f.se.fc2.', 'f.se.excitation.2.'), ('f.c.0.', 'f.c.'), ('f.c.1.', 'f.final_bn.'))
    trunk = {}
    for key, value in tv.state_dict().items():
        if key.startswith('fc.'):
            continue
        if key.startswith('stem.'):
            key = '_feature_blocks.conv1.stem.' + key.removeprefix('stem.')
        else:
            stage, rest = key.removeprefix('trunk_output.block').split('.', 1)
            key = f'_feature_blocks.res{int(stage) + 1}.{rest}'
            for old, new in renames:
                key = key.replace(old, new)
        trunk[key] = value
    gen = torch.Generator().manual_seed(3)
    heads = {'0.projection_head.0.weight': torch.randn(64, 440, generator=gen),
             '0.projection_head.0.bias': torch.zeros(64), '0.prototypes0.weight': torch.randn(30, 64, generator=gen)}
    if with_classifier:
        heads = {'0.clf.0.weight': tv.fc.weight.detach().clone(), '0.clf.0.bias': tv.fc.bias.detach().clone()}
    return dict(classy_state_dict=dict(base_model=dict(model=dict(trunk=trunk, heads=heads)), train_phase_idx=0),
                phase_idx=0, iteration=1000)


@pytest.mark.parametrize('with_classifier', [True, False], ids=['seer_ft_in1k', 'seer-ssl-trunk'])
def test_classy_vissl_seer(with_classifier, tmp_path):
    tv = randomize_bn(torchvision.models.regnet_y_400mf()).eval()
    path = tmp_path / 'model_final_checkpoint_phase0.torch'
    torch.save(_vissl_seer_checkpoint(tv, with_classifier), path)
    x = _input()
    with torch.no_grad():
        ref = tv(x) if with_classifier else tv.avgpool(tv.trunk_output(tv.stem(x))).flatten(1)
    _assert_loads_like(ref, torch.load(path, weights_only=True), path, 'regnety_004', 'classy',
                       num_classes=1000 if with_classifier else 0)


# ---------------------------------------------------------------------------------------------- errors

def test_detect_every_format_and_explicit_format(pycls_cfg):
    layouts = {
        'timm': regzoo.create_model('regnetx_002').state_dict(),
        'torchvision': torchvision.models.regnet_x_400mf().state_dict(),
        'hf': transformers.RegNetModel(transformers.RegNetConfig(**HF_CONFIGS['regnetx_002'])).state_dict(),
        'pycls': _build_pycls(pycls_cfg, *PYCLS_CASES['regnetx_002']).state_dict(),
    }
    for fmt, state_dict in layouts.items():
        assert detect_format(state_dict) == fmt
        assert to_regzoo(state_dict, source_format=fmt)[1] == fmt
    assert set(FORMATS) == {'timm', 'torchvision', 'hf', 'pycls', 'classy'}
    # forcing the wrong layout fails loudly, naming keys it could not place
    with pytest.raises(ValueError, match=r"torchvision checkpoint: 266 key\(s\) have no regzoo equivalent, "
                                         r"e\.g\. \['stem\.conv\.weight'"):
        to_regzoo(layouts['pycls'], source_format='torchvision')


def test_unknown_layout_lists_keys():
    resnet = torchvision.models.resnet18().state_dict()
    with pytest.raises(ValueError, match=r"unrecognised checkpoint layout \(\d+ keys, e\.g\. \['bn1\.bias'"):
        to_regzoo(resnet)


def test_unknown_source_format_suggests():
    with pytest.raises(ValueError, match=r"unknown source_format 'torchvison'; did you mean 'torchvision'"):
        to_regzoo({'stem.conv.weight': torch.zeros(1)}, source_format='torchvison')


@pytest.mark.parametrize('checkpoint, message', [
    ({}, r'no state dict found: checkpoint is a mapping with 0 key'),
    ({'epoch': 3, 'optimizer': {}},
     r"checkpoint is not a state dict: 2 value\(s\) are not tensors, e\.g\. \['epoch', 'optimizer'\]"),
    ({'state_dict': {'a.weight': torch.zeros(1), 'note': 'x'}}, r"checkpoint\['state_dict'\] is not a state dict"),
    ({'classy_state_dict': {'base_model': {}}}, r"expected checkpoint\['classy_state_dict'\]\['base_model'\]"),
])
def test_bad_containers(checkpoint, message):
    with pytest.raises(ValueError, match=message):
        to_regzoo(checkpoint)


def test_pycls_flip_needs_three_channels():
    state_dict = regzoo.create_model('regnetx_002', in_chans=4).state_dict()
    pycls_like = {'stem.conv.weight': state_dict['stem.conv.weight'], 's1.b1.f.a.weight': torch.zeros(1)}
    with pytest.raises(ValueError, match=r'stem\.conv\.weight has shape \(32, 4, 3, 3\).*needs 3 input channels'):
        to_regzoo(pycls_like)
