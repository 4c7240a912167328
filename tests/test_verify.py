"""Checkpoints verified on load (issue 16): zip CRCs, regzoo's digests of tensor bytes (xxh3-128; sha256 in files
written before issue 20), NaN/Inf, and one clear
``CheckpointError`` naming the file for every broken input."""
from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import regzoo
from regzoo.utils.checksum import DIGEST_KEY, GROUPS_KEY, digest_metadata, failed_groups, tensor_group
from regzoo.zoo.loading import CheckpointError, load_checkpoint

ARCH = 'regnetx_002'


@pytest.fixture(scope='module')
def state_dict():
    torch.manual_seed(0)
    return {k: v.clone() for k, v in regzoo.create_model(ARCH).state_dict().items()}


def _assert_same(model, state_dict):
    loaded = model.state_dict()
    assert loaded.keys() == state_dict.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _tensor_offset(path, name):
    """Absolute file offset of the middle of tensor ``name``'s data in a safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], 'little')
    start, end = json.loads(raw[8:8 + n])[name]['data_offsets']
    return 8 + n + (start + end) // 2


# ---------------------------------------------------------------------------------------------- zip CRC

def test_pth_bit_flip_fails_its_crc(state_dict, tmp_path):
    """Regression: one byte XOR 0xFF in the middle of a torch.save file loaded silently (s4.b4.conv3 changed)."""
    path = tmp_path / 'w.pth'
    torch.save(state_dict, path)
    _flip(path, path.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=r'w\.pth: corrupt: the zip record .*/data/\d+.* CRC-32'):
        regzoo.create_model(ARCH, checkpoint_path=path)


def test_pth_unmodified_loads_bit_identical(state_dict, tmp_path):
    torch.save(state_dict, tmp_path / 'w.pth')
    _assert_same(regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'w.pth'), state_dict)


def test_deferred_verification_is_waited_for_before_the_weights_are_used(state_dict, tmp_path):
    """read_checkpoint(defer_verification=True) returns before the CRCs are known; the damage is still reported
    by verify(), by apply_checkpoint before it copies anything, and by the plain (synchronous) read."""
    from regzoo.zoo.loading import apply_checkpoint, read_checkpoint
    path = tmp_path / 'w.pth'
    torch.save(state_dict, path)
    _flip(path, path.stat().st_size // 2)
    checkpoint = read_checkpoint(path, defer_verification=True)  # unpickles fine: only tensor bytes changed
    model = regzoo.create_model(ARCH)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match='CRC-32'):
        apply_checkpoint(model, checkpoint)
    _assert_same(model, before)  # nothing was copied into the model
    with pytest.raises(CheckpointError, match='CRC-32'):
        checkpoint.verify()  # asked again, the same answer
    with pytest.raises(CheckpointError, match='CRC-32'):
        read_checkpoint(path)


def test_damaged_sizes_report_the_damage_not_the_build_error(state_dict, tmp_path):
    """A damaged file whose unpickled sizes break the model build is reported as damaged (the build waits for
    the background check before raising its own error)."""
    from regzoo.zoo.loading import Checkpoint

    def broken(self, first_conv='stem.conv'):
        return 0  # the first conv's size as damaged bytes might give it: RegNet(in_chans=0) cannot be built

    path = tmp_path / 'w.pth'
    torch.save(state_dict, path)
    _flip(path, path.stat().st_size // 2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Checkpoint, 'in_chans', broken)
        with pytest.raises(CheckpointError, match='CRC-32'):
            regzoo.create_model(ARCH, checkpoint_path=path)


def test_malicious_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, (f'touch {tmp_path / "pwned"}',)
    torch.save({'state_dict': {'x': Evil()}}, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match='refusing to load'):
        regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'evil.pth')
    assert not (tmp_path / 'pwned').exists()


# ---------------------------------------------------------------------------------------------- digests

def _format_digest(tensors, hexdigest):
    """The digest metadata as docs/checkpoint-formats.md defines it, written out here with the hash given:
    per group, a hash over 'name NUL dtype NUL shape NUL hash(bytes)' lines in sorted key order; the file's, a
    hash over 'group NUL digest' lines."""
    lines = {}
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        lines.setdefault(tensor_group(name), []).append(
            f'{name}\0{str(t.dtype).removeprefix("torch.")}\0{tuple(t.shape)}\0{hexdigest(data)}\n')
    groups = {g: hexdigest(''.join(text).encode()) for g, text in sorted(lines.items())}
    return groups, hexdigest(''.join(f'{g}\0{d}\n' for g, d in sorted(groups.items())).encode())


def test_written_digest_is_xxh3_128_of_the_documented_lines():
    import xxhash
    tensors = {'stem.conv.weight': torch.randn(4, 3, 3, 3), 's1.b1.x': torch.arange(5), 'head.fc.bias': torch.ones(2)}
    groups, total = _format_digest(tensors, lambda b: xxhash.xxh3_128(b).hexdigest())
    meta = digest_metadata(tensors)
    assert (DIGEST_KEY, GROUPS_KEY) == ('regzoo_xxh3_128', 'regzoo_xxh3_128_groups')
    assert meta == {DIGEST_KEY: total, GROUPS_KEY: json.dumps(groups, separators=(',', ':')),
                    'regzoo_all_finite': 'true'}
    assert not any('sha256' in key for key in meta)
    tensors['head.fc.bias'][1] = float('inf')  # any NaN/Inf: no finiteness record
    assert set(digest_metadata(tensors)) == {DIGEST_KEY, GROUPS_KEY}


def _legacy_sha256_file(path, tensors):
    """A safetensors file as regzoo wrote it before issue 20: sha256 digests under the regzoo_sha256 keys."""
    import hashlib
    groups, total = _format_digest(tensors, lambda b: hashlib.sha256(b).hexdigest())
    save_file(tensors, path, metadata={'format': 'pt', 'regzoo_sha256': total,
                                       'regzoo_sha256_groups': json.dumps(groups, separators=(',', ':'))})
    return path


def test_legacy_sha256_files_still_verify(state_dict, tmp_path):
    path = _legacy_sha256_file(tmp_path / 'old.safetensors', state_dict)
    with safe_open(str(path), 'pt') as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    assert failed_groups(tensors, meta) == []
    assert failed_groups({**tensors, 'head.fc.bias': tensors['head.fc.bias'] + 1}, meta) == ['head']
    assert failed_groups(tensors, {**meta, 'regzoo_sha256': '0' * 64}) == ['(the digest metadata)']
    _assert_same(regzoo.create_model(ARCH, checkpoint_path=path), state_dict)  # unmodified: bit-identical
    _flip(path, _tensor_offset(path, 's2.b1.conv1.conv.weight'))
    with pytest.raises(CheckpointError, match=r'old\.safetensors: corrupt: the tensor data of group s2 no longer '
                                              r'matches the sha256 digest \(regzoo_sha256\)'):
        regzoo.create_model(ARCH, checkpoint_path=path)


def test_zip_crc_check_is_zipfiles(state_dict, tmp_path):
    """bad_zip_record is zipfile's own record check: each record's CRC-32, a damaged local header included."""
    import zipfile
    from regzoo.utils.checksum import bad_zip_record
    path = tmp_path / 'w.pth'
    torch.save(state_dict, path)
    assert bad_zip_record(path) is None
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    head = path.read_bytes()[info.header_offset:info.header_offset + 30]
    name_len, extra_len = int.from_bytes(head[26:28], 'little'), int.from_bytes(head[28:30], 'little')
    _flip(path, info.header_offset + 30 + name_len + extra_len + info.compress_size // 2)  # inside its data
    assert bad_zip_record(path) == info.filename

def test_digest_groups():
    assert [tensor_group(k) for k in ('stem.conv.weight', 's3.b1.conv1.conv.weight', 'head.fc.bias',
                                      'regnet.encoder.stages.2.layers.0.x', 'regnet.embedder.embedder.y',
                                      'classifier.1.weight')] == \
        ['stem', 's3', 'head', 'regnet.encoder.stages.2', 'regnet.embedder', 'classifier']


def test_digest_covers_name_dtype_shape_and_bytes():
    base = {'a.x': torch.arange(6.0), 'b.y': torch.zeros(2, dtype=torch.int64)}
    meta = digest_metadata(base)
    assert failed_groups(base, meta) == []
    assert failed_groups(base, {'format': 'pt'}) is None  # foreign file: nothing to check
    assert failed_groups({**base, 'a.x': torch.arange(6.0).reshape(2, 3)}, meta) == ['a']
    assert failed_groups({**base, 'a.x': torch.arange(6.0).double()}, meta) == ['a']
    assert failed_groups({'a.z': base['a.x'], 'b.y': base['b.y']}, meta) == ['a']
    assert failed_groups({**base, 'b.y': torch.tensor([0, 1])}, meta) == ['b']
    assert failed_groups(base, {**meta, GROUPS_KEY: meta[GROUPS_KEY][:-2]}) == ['(the digest metadata)']


@pytest.mark.parametrize('fmt', ['timm', 'hf'])
def test_save_pretrained_digest_catches_a_flipped_byte(fmt, tmp_path):
    model = regzoo.create_model(ARCH)
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    out = regzoo.save_pretrained(model, tmp_path / 'out', format=fmt)
    weights = out / 'model.safetensors'
    with safe_open(str(weights), 'pt') as f:
        assert DIGEST_KEY in f.metadata() and GROUPS_KEY in f.metadata()
    _assert_same(regzoo.create_model(ARCH, checkpoint_path=out), state_dict)  # unmodified: bit-identical
    name, group = (('s3.b1.conv2.conv.weight', 's3') if fmt == 'timm' else
                   ('regnet.encoder.stages.2.layers.0.layer.1.convolution.weight', 'regnet.encoder.stages.2'))
    _flip(weights, _tensor_offset(weights, name))
    with pytest.raises(CheckpointError, match=rf'model\.safetensors: corrupt: the tensor data of group '
                                              rf'{group} no longer matches the xxh3-128'):
        regzoo.create_model(ARCH, checkpoint_path=out)


def test_train_weights_carry_a_digest(state_dict, tmp_path):
    from regzoo.training.checkpoint import save_weights
    path = tmp_path / 'best.safetensors'
    save_weights(path, state_dict, {'epoch': '1'})
    with safe_open(str(path), 'pt') as f:
        assert failed_groups({k: f.get_tensor(k) for k in f.keys()}, f.metadata()) == []
    _flip(path, _tensor_offset(path, 'head.fc.weight'))
    with pytest.raises(CheckpointError, match=r'best\.safetensors: corrupt: .* group head no longer matches'):
        regzoo.create_model(ARCH, checkpoint_path=path)


def test_foreign_safetensors_without_digest_load_as_before(state_dict, tmp_path):
    save_file(state_dict, tmp_path / 'w.safetensors', metadata={'format': 'pt'})
    _assert_same(regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'w.safetensors'), state_dict)


# ---------------------------------------------------------------------------------------------- NaN / Inf

def test_nonfinite_weights_raise_unless_allowed(state_dict, tmp_path, caplog):
    bad = dict(state_dict)
    bad['s2.b1.conv1.conv.weight'] = bad['s2.b1.conv1.conv.weight'].clone()
    bad['s2.b1.conv1.conv.weight'][0, 0, 0, 0] = float('nan')
    bad['head.fc.bias'] = bad['head.fc.bias'].clone()
    bad['head.fc.bias'][3] = float('inf')
    path = tmp_path / 'nan.pth'
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match=r'nan\.pth: NaN or Inf values in 2 tensor\(s\): '
                                              r's2\.b1\.conv1\.conv\.weight, head\.fc\.bias.*allow_nonfinite=True'):
        regzoo.create_model(ARCH, checkpoint_path=path)
    with pytest.raises(CheckpointError, match='NaN or Inf'):
        load_checkpoint(regzoo.create_model(ARCH), path)
    with caplog.at_level(logging.WARNING, logger='regzoo.zoo.applying'):
        model = regzoo.create_model(ARCH, checkpoint_path=path, allow_nonfinite=True)
    assert 'loading them anyway' in caplog.text
    other = regzoo.create_model(ARCH)
    load_checkpoint(other, path, allow_nonfinite=True)
    for loaded in (model.state_dict(), other.state_dict()):  # bit-identical, NaN and Inf included
        assert all(torch.equal(loaded[k].view(torch.uint8) if v.is_floating_point() else loaded[k],
                               v.view(torch.uint8) if v.is_floating_point() else v) for k, v in bad.items())


def _nan_at(state_dict, name='s2.b1.conv1.conv.weight'):
    bad = dict(state_dict)
    bad[name] = bad[name].clone()
    bad[name].view(-1)[0] = float('nan')
    return bad


def test_a_finite_regzoo_file_records_it_and_is_not_scanned_again(state_dict, tmp_path):
    # regzoo's writer records that every tensor was finite; with the digests verified the load trusts it
    # (``Checkpoint.finite_when_written``); a NaN that appears in the bytes later fails the digest instead
    from regzoo.utils.checksum import FINITE_KEY
    from regzoo.zoo.loading import read_checkpoint
    from regzoo.zoo.sharded import write_weights
    write_weights(tmp_path, state_dict)
    path = tmp_path / 'model.safetensors'
    with safe_open(str(path), 'pt') as f:
        assert f.metadata()[FINITE_KEY] == 'true'
    assert read_checkpoint(path).finite_when_written
    _assert_same(regzoo.create_model(ARCH, checkpoint_path=path), state_dict)
    raw = bytearray(path.read_bytes())  # the first float of one tensor becomes NaN (0x7fc00000) on disk
    n = int.from_bytes(raw[:8], 'little')
    start = 8 + n + json.loads(raw[8:8 + n])['s2.b1.conv1.conv.weight']['data_offsets'][0]
    raw[start:start + 4] = (0x7FC00000).to_bytes(4, 'little')
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r'corrupt: the tensor data of group s2 no longer matches'):
        regzoo.create_model(ARCH, checkpoint_path=path, allow_nonfinite=True)


def test_nonfinite_weights_written_by_regzoo_record_nothing_and_are_scanned(state_dict, tmp_path):
    from regzoo.utils.checksum import FINITE_KEY
    from regzoo.zoo.loading import read_checkpoint
    from regzoo.zoo.sharded import write_weights
    write_weights(tmp_path, _nan_at(state_dict))  # a diverged run saved: its digests verify, its NaN must not pass
    path = tmp_path / 'model.safetensors'
    with safe_open(str(path), 'pt') as f:
        assert DIGEST_KEY in f.metadata() and FINITE_KEY not in f.metadata()
    assert not read_checkpoint(path, defer_verification=True).finite_when_written
    with pytest.raises(CheckpointError, match=r'NaN or Inf values in 1 tensor\(s\): s2\.b1\.conv1\.conv\.weight'):
        regzoo.create_model(ARCH, checkpoint_path=path)


def test_the_finite_record_alone_is_not_trusted(state_dict, tmp_path):
    # without a digest to verify the bytes against, a file claiming finiteness is scanned like any other
    from regzoo.utils.checksum import FINITE_KEY
    path = tmp_path / 'w.safetensors'
    save_file(_nan_at(state_dict), path, metadata={'format': 'pt', FINITE_KEY: 'true'})
    with pytest.raises(CheckpointError, match='NaN or Inf'):
        regzoo.create_model(ARCH, checkpoint_path=path)


# ---------------------------------------------------------------------------------------------- broken inputs

def _empty_pth(tmp_path, sd):
    (tmp_path / 'empty.pth').write_bytes(b'')
    return tmp_path / 'empty.pth'


def _empty_safetensors(tmp_path, sd):
    (tmp_path / 'empty.safetensors').write_bytes(b'')
    return tmp_path / 'empty.safetensors'


def _dir_without_weights(tmp_path, sd):
    (tmp_path / 'nothing').mkdir()
    (tmp_path / 'nothing' / 'README.md').write_text('hi\n')
    return tmp_path / 'nothing'


def _int_weights(tmp_path, sd):
    torch.save({k: v.to(torch.int32) if v.is_floating_point() else v for k, v in sd.items()}, tmp_path / 'int.pth')
    return tmp_path / 'int.pth'


def _training_state(tmp_path, sd):
    run = tmp_path / 'run'
    run.mkdir()
    save_file(sd, run / 'last.safetensors')
    torch.save({'save_id': 'x', 'epoch': 1, 'optimizer': {}, 'scheduler': {}, 'args': {}}, run / 'last.state.pt')
    return run / 'last.state.pt'


def _training_state_renamed(tmp_path, sd):
    torch.save({'save_id': 'x', 'epoch': 1, 'optimizer': {}, 'scheduler': {}, 'args': {}}, tmp_path / 'weights.pt')
    return tmp_path / 'weights.pt'


def _symlink_loop(tmp_path, sd):
    a, b = tmp_path / 'a.pth', tmp_path / 'b.pth'
    os.symlink(a, b)
    os.symlink(b, a)
    return a


def _sharded_bad_index(tmp_path, sd):
    (tmp_path / 'sharded').mkdir()
    (tmp_path / 'sharded' / 'model.safetensors.index.json').write_text('{"weight_map": ')
    return tmp_path / 'sharded'


def _sharded_missing_shard(tmp_path, sd):
    (tmp_path / 'sharded').mkdir()
    (tmp_path / 'sharded' / 'model.safetensors.index.json').write_text(
        json.dumps({'weight_map': {'stem.conv.weight': 'model-00001-of-00002.safetensors'}}))
    return tmp_path / 'sharded'


BROKEN = {
    'empty .pth': (_empty_pth, r'empty\.pth is not a checkpoint: the file is empty, 0 bytes; pass a weights file'),
    'empty .safetensors': (_empty_safetensors, r'empty\.safetensors is not a checkpoint: the file is empty'),
    'directory without weights': (_dir_without_weights, r'nothing: expected model\.safetensors .*found: none'),
    'int weights': (_int_weights, r'int\.pth \(timm layout\) does not fit regnetx_002:\n.*dtype mismatches '
                                  r'\(\d+\): stem\.conv\.weight checkpoint int32 vs model float32'),
    'training state': (_training_state, r"last\.state\.pt is train\.py's training state .*not model weights: "
                                        r'use .*last\.safetensors'),
    'training state renamed': (_training_state_renamed, r"weights\.pt is train\.py's training state"),
    'symlink loop': (_symlink_loop, r'a\.pth: a symlink loop'),
    'sharded index not JSON': (_sharded_bad_index, r'model\.safetensors\.index\.json: not a readable sharded'),
    'sharded index missing shard': (_sharded_missing_shard, r'index\.json: its shard model-00001-of-00002'
                                                            r'\.safetensors is missing'),
}


@pytest.mark.parametrize('case', list(BROKEN))
def test_broken_input_gets_one_clear_error(case, state_dict, tmp_path):
    make, message = BROKEN[case]
    path = make(tmp_path, state_dict)
    with pytest.raises(CheckpointError, match=message) as info:
        regzoo.create_model(ARCH, checkpoint_path=path)
    assert str(path) in str(info.value) or path.name in str(info.value)


def test_directory_given_for_a_file_loads(state_dict, tmp_path):
    (tmp_path / 'd').mkdir()
    torch.save(state_dict, tmp_path / 'd' / 'only.pth')
    _assert_same(regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'd'), state_dict)


def test_dangling_symlink_is_file_not_found(tmp_path):
    os.symlink(tmp_path / 'gone.pth', tmp_path / 'link.pth')
    with pytest.raises(FileNotFoundError, match='dangling symlink'):
        regzoo.create_model(ARCH, checkpoint_path=tmp_path / 'link.pth')


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads files whatever their mode: chmod 000 cannot be tested')
def test_unreadable_file(state_dict, tmp_path):
    path = tmp_path / 'w.pth'
    torch.save(state_dict, path)
    path.chmod(0)
    with pytest.raises(CheckpointError, match=r'w\.pth: .*(Permission|unreadable)'):
        regzoo.create_model(ARCH, checkpoint_path=path)
