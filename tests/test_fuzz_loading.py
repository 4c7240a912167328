"""Fuzz the checkpoint loaders (issue 16): every damaged or mismatched input either loads with weights bit-identical
to the original, or raises ``CheckpointError``. No other exception, no silently changed weight.

Seeded and bounded: a few hundred cases in the default run, several thousand under ``-m slow``. Each test prints its
case count per outcome (``pytest -rP`` or ``-s`` shows them).
"""
from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import regzoo
from regzoo.utils.checksum import digest_metadata
from regzoo.zoo.convert import hf
from regzoo.zoo.loading import CheckpointError

ARCH = 'regnetx_002'
TINY = dict(depth=4, w0=8, wa=8.0, wm=2.0, group_size=8, stem_width=8)  # 13k parameters: fast to load
SEED = 16


def _same(loaded: dict, reference: dict) -> bool:
    return loaded.keys() == reference.keys() and all(
        loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in reference.items())


def _outcome(path: Path, reference: dict, arch: str = ARCH, **kwargs) -> str:
    """'identical' or 'error' (CheckpointError); anything else is returned as a failure description."""
    try:
        model = regzoo.create_model(arch, checkpoint_path=path, **kwargs)
    except CheckpointError:
        return 'error'
    except Exception as e:  # noqa: BLE001 - the point: no other exception
        return f'FAIL {type(e).__name__}: {str(e)[:200]}'
    return 'identical' if _same(model.state_dict(), reference) else 'FAIL loaded with changed weights'


# ---------------------------------------------------------------------------------------------- byte mutations

def _safetensors_header_end(data: bytes) -> int:
    return min(len(data), 8 + int.from_bytes(data[:8], 'little')) if len(data) >= 8 else len(data)


def _byte_mutations(data: bytes, name: str, rng: random.Random, n: int):
    """(label, new bytes, new name) for truncations, bit flips in header/data/tail, random bytes, renames."""
    size = len(data)
    head = _safetensors_header_end(data) if name.endswith('.safetensors') else min(size, 1024)
    tail = max(head, size - min(1024, size // 10))  # a zip's central directory lies in its last bytes
    offsets = sorted({0, 1, 7, 8, 9, head - 1, head, head + 1, size - 22, size - 1} | {rng.randrange(size)
                                                                                        for _ in range(n)})
    for cut in (o for o in offsets if 0 <= o < size):
        yield f'truncate@{cut}', data[:cut], name
    for region, lo, hi in (('header', 0, head), ('data', head, tail), ('tail', tail, size)):
        for _ in range(n if hi > lo else 0):
            pos, bit = rng.randrange(lo, hi), 1 << rng.randrange(8)
            flipped = bytearray(data)
            flipped[pos] ^= bit
            yield f'flip-{region}@{pos}^{bit}', bytes(flipped), name
    for _ in range(max(1, n // 4)):
        yield 'random-same-size', rng.randbytes(size), name
        yield 'random-short', rng.randbytes(rng.randrange(1, 200)), name
        yield 'random-after-prefix', data[:16] + rng.randbytes(size - 16), name
    stem = name.rsplit('.', 1)[0]
    for ext in ('.safetensors', '.pth', '.bin', '.pyth'):
        if not name.endswith(ext):
            yield f'rename{ext}', data, stem + ext


def _tiny_state_dict() -> dict:
    torch.manual_seed(SEED)
    model = regzoo.create_model(ARCH, num_classes=10, **TINY)
    with torch.no_grad():  # BN buffers away from their defaults, so a silent reset would show
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.randn_like(v))
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope='module')
def templates(tmp_path_factory):
    """Checkpoints of the tiny model as regzoo and its users write them: a target is (folder, file to damage)."""
    root = tmp_path_factory.mktemp('templates')
    sd = _tiny_state_dict()
    pth = root / 'pth'
    pth.mkdir()
    torch.save(sd, pth / 'w.pth')
    st = root / 'safetensors'
    st.mkdir()
    save_file(sd, st / 'w.safetensors', metadata={'format': 'pt', **digest_metadata(sd)})
    model = regzoo.create_model(ARCH, num_classes=10, **TINY)
    model.load_state_dict(sd)
    hf_dir = regzoo.save_pretrained(model, root / 'hf', format='hf')
    sharded = root / 'sharded'
    sharded.mkdir()
    keys = sorted(sd)
    shards = {'model-00001-of-00002.safetensors': keys[:len(keys) // 2],
              'model-00002-of-00002.safetensors': keys[len(keys) // 2:]}
    for shard, names in shards.items():
        part = {k: sd[k] for k in names}
        save_file(part, sharded / shard, metadata={'format': 'pt', **digest_metadata(part)})
    (sharded / 'model.safetensors.index.json').write_text(json.dumps(
        {'metadata': {}, 'weight_map': {k: s for s, names in shards.items() for k in names}}, indent=2))
    targets = [(pth, 'w.pth', pth / 'w.pth'), (st, 'w.safetensors', st / 'w.safetensors'),
               (hf_dir, 'model.safetensors', hf_dir), (hf_dir, 'config.json', hf_dir),
               (sharded, 'model.safetensors.index.json', sharded)]
    targets += [(sharded, shard, sharded) for shard in shards]
    return sd, targets


def _run_byte_fuzz(templates, tmp_path, n: int) -> Counter:
    sd, targets = templates
    rng = random.Random(SEED)
    counts, failures, case = Counter(), [], 0
    for folder, name, load_path in targets:
        assert _outcome(load_path, sd, **TINY) == 'identical', f'{load_path}: the unmodified template must load'
        data = (folder / name).read_bytes()
        for label, new, new_name in _byte_mutations(data, name, rng, n):
            case += 1
            work = tmp_path / f'c{case}'
            shutil.copytree(folder, work)
            (work / name).unlink()
            (work / new_name).write_bytes(new)
            target = work / load_path.relative_to(folder) if load_path != folder else work
            if target.name == name and new_name != name:
                target = work / new_name
            result = _outcome(target, sd, **TINY)
            counts[f'{folder.name}/{name}: {result.split(":")[0]}'] += 1
            counts[result.split(':')[0]] += 1
            if result.startswith('FAIL'):
                failures.append(f'{folder.name}/{name} {label}: {result}')
            shutil.rmtree(work)
    print(f'\nbyte fuzz: {case} cases: identical {counts["identical"]}, CheckpointError {counts["error"]}, '
          f'other {case - counts["identical"] - counts["error"]}')
    for key in sorted(k for k in counts if '/' in k):
        print(f'  {key}: {counts[key]}')
    assert not failures, f'{len(failures)} of {case} cases:\n' + '\n'.join(failures[:30])
    return counts


def test_byte_fuzz(templates, tmp_path):
    counts = _run_byte_fuzz(templates, tmp_path, n=6)
    assert counts['error'] + counts['identical'] >= 200


@pytest.mark.slow
def test_byte_fuzz_long(templates, tmp_path):
    _run_byte_fuzz(templates, tmp_path, n=80)


# ---------------------------------------------------------------------------------------------- foreign layouts

def _torchvision():
    import torchvision
    torch.manual_seed(SEED)
    return torchvision.models.regnet_x_400mf().eval()


def _layout_timm():
    return 'timm.pth', _tiny_state_dict(), lambda sd: sd, TINY


def _layout_hf():
    return 'hf.safetensors', hf.from_regzoo(_tiny_state_dict(), se=False), lambda sd: sd, TINY


def _layout_torchvision():
    return 'tv.pth', dict(_torchvision().state_dict()), lambda sd: sd, {'arch': 'regnetx_004_tv'}


def _layout_classy():
    from test_convert import _vissl_seer_checkpoint
    ckpt = _vissl_seer_checkpoint(_torchvision(), with_classifier=True)
    model = ckpt['classy_state_dict']['base_model']['model']
    flat = {f'trunk/{k}': v for k, v in model['trunk'].items()} | {f'heads/{k}': v for k, v in model['heads'].items()}

    def build(sd):
        trunk = {k.removeprefix('trunk/'): v for k, v in sd.items() if k.startswith('trunk/')}
        heads = {k.removeprefix('heads/'): v for k, v in sd.items() if k.startswith('heads/')}
        return {**ckpt, 'classy_state_dict': {'base_model': {'model': {'trunk': trunk, 'heads': heads}}}}
    return 'model_final_checkpoint_phase0.torch', flat, build, {'arch': 'regnetx_004_tv'}


def _layout_pycls():
    from pycls.core.config import cfg, reset_cfg
    from pycls.models.regnet import RegNet
    reset_cfg()
    try:
        cfg.MODEL.NUM_CLASSES = 1000
        cfg.REGNET.DEPTH, cfg.REGNET.W0, cfg.REGNET.WA, cfg.REGNET.WM, cfg.REGNET.GROUP_W = 13, 24, 36.44, 2.49, 8
        torch.manual_seed(SEED)
        sd = dict(RegNet().state_dict())
    finally:
        reset_cfg()
    return 'model_epoch_0100.pyth', sd, lambda sd: {'epoch': 99, 'model_state': sd}, {}


LAYOUTS = {'timm': _layout_timm, 'hf': _layout_hf, 'torchvision': _layout_torchvision, 'classy': _layout_classy,
           'pycls': _layout_pycls}


def _key_mutations(sd: dict, rng: random.Random, n: int):
    keys = sorted(sd)
    first, last = keys[0], keys[-1]
    picks = list(dict.fromkeys([first, last, *rng.sample(keys, min(n, len(keys)))]))
    for key in picks:
        yield f'drop {key}', {k: v for k, v in sd.items() if k != key}
        parts = key.split('.')
        parts[-2 if len(parts) > 1 else -1] += 'x'
        yield f'rename {key}', {('.'.join(parts) if k == key else k): v for k, v in sd.items()}
        v = sd[key]
        shape = (1, v.numel()) if tuple(v.shape) != (1, v.numel()) else (v.numel(),)
        yield f'reshape {key} {tuple(v.shape)}->{shape}', {**sd, key: v.reshape(shape)}
        if v.is_floating_point():
            yield f'retype {key} int', {**sd, key: v.to(torch.int32)}


def _run_layout_fuzz(layout: str, tmp_path, n: int) -> Counter:
    name, sd, build, kwargs = LAYOUTS[layout]()
    kwargs = dict(kwargs)
    arch = kwargs.pop('arch', ARCH)

    def save(state_dict, path):
        if path.suffix == '.safetensors':
            save_file(state_dict, path)
        else:
            torch.save(build(state_dict), path)

    save(sd, tmp_path / name)
    reference = regzoo.create_model(arch, checkpoint_path=tmp_path / name, **kwargs).state_dict()
    rng = random.Random(f'{SEED}-{layout}')
    counts, failures = Counter(), []
    for i, (label, mutated) in enumerate(_key_mutations(sd, rng, n)):
        path = tmp_path / f'{i}-{name}'
        save(mutated, path)
        result = _outcome(path, reference, arch, **kwargs)
        counts[result.split(':')[0]] += 1
        if result.startswith('FAIL'):
            failures.append(f'{layout} {label}: {result}')
        path.unlink()
    print(f'\n{layout} key fuzz: {sum(counts.values())} cases: {dict(counts)}')
    assert not failures, '\n'.join(failures)
    return counts


@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_layout_fuzz(layout, tmp_path):
    counts = _run_layout_fuzz(layout, tmp_path, n=3)
    assert counts['error'] > 0


@pytest.mark.slow
@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_layout_fuzz_long(layout, tmp_path):
    _run_layout_fuzz(layout, tmp_path, n=25)
