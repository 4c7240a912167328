"""Sharded checkpoints (issue 15): both HF index forms read shard by shard into a model built on the meta device,
``save_pretrained(max_shard_size=)`` writing HF's shards + index, the checks a sharded load keeps (conversion,
head and first-conv fitting, strict keys, NaN/Inf, digests, a missing or damaged shard), and its peak memory.

Reference checkpoints: transformers' own ``save_pretrained`` of a randomly initialised ``RegNetForImageClassification``
(safetensors shards), the ``pytorch_model-0000k-of-0000n.bin`` form as older transformers wrote it
(huggingface_hub's split, ``torch.save`` per shard), and regzoo's own saves of a random regnety_040.
"""
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from helpers import max_rel_diff, populate_hub_cache, randomize_bn, refuse_network
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import safe_open
from safetensors.torch import load_file

import regzoo
from regzoo.utils.checksum import DIGEST_KEY, failed_groups
from regzoo.zoo.convert import hf
from regzoo.zoo.loading import CheckpointError
from regzoo.zoo.sharded import parse_size

ARCH = 'regnety_040'  # 20.6 M parameters, 83 MB of fp32
LIMIT = '25MB'  # -> 4 shards
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
ROOT = Path(__file__).resolve().parents[1]


def _shards(folder: Path, pattern: str = 'model-*.safetensors') -> list[Path]:
    return sorted(folder.glob(pattern))


def write_bin_shards(tensors: dict, folder: Path, max_shard_size: int | str) -> list[Path]:
    """``pytorch_model-0000k-of-0000n.bin`` + ``pytorch_model.bin.index.json``, as transformers 4 wrote them."""
    split = split_torch_state_dict_into_shards(tensors, filename_pattern='pytorch_model{suffix}.bin',
                                               max_shard_size=max_shard_size)
    folder.mkdir(parents=True, exist_ok=True)
    for name, names in split.filename_to_tensors.items():
        torch.save({k: tensors[k] for k in names}, folder / name)
    index = {'metadata': split.metadata, 'weight_map': split.tensor_to_filename}
    (folder / 'pytorch_model.bin.index.json').write_text(json.dumps(index, indent=2))
    return [folder / name for name in split.filename_to_tensors]


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return randomize_bn(regzoo.create_model(ARCH)).eval()


@pytest.fixture(scope='module')
def saved(model, tmp_path_factory):
    """The model saved unsharded, sharded in both layouts, and as .bin shards (HF keys)."""
    root = tmp_path_factory.mktemp('saved')
    out = {'plain': regzoo.save_pretrained(model, root / 'plain', format='hf'),
           'hf': regzoo.save_pretrained(model, root / 'hf', format='hf', max_shard_size=LIMIT),
           'timm': regzoo.save_pretrained(model, root / 'timm', format='timm', max_shard_size=LIMIT)}
    tensors = hf.from_regzoo(dict(model.state_dict()), se=True)
    write_bin_shards(tensors, root / 'bin', LIMIT)
    (root / 'bin' / 'config.json').write_text((out['plain'] / 'config.json').read_text())
    out['bin'] = root / 'bin'
    return out


def test_save_pretrained_writes_hf_shards_each_with_its_digests(saved, model):
    for form in ('hf', 'timm'):
        folder = saved[form]
        shards = _shards(folder)
        assert len(shards) >= 3 and not (folder / 'model.safetensors').exists()
        assert [p.name for p in shards] == [f'model-{k:05d}-of-{len(shards):05d}.safetensors'
                                            for k in range(1, len(shards) + 1)]
        index = json.loads((folder / 'model.safetensors.index.json').read_text())
        sizes = 0
        for shard in shards:
            assert shard.stat().st_size <= parse_size(LIMIT) + 2 ** 16  # + its header
            tensors = load_file(shard)
            with safe_open(str(shard), 'pt') as f:
                metadata = f.metadata()
            assert DIGEST_KEY in metadata and failed_groups(tensors, metadata) == []
            assert {k for k, v in index['weight_map'].items() if v == shard.name} == set(tensors)
            sizes += sum(t.numel() * t.element_size() for t in tensors.values())
        assert index['metadata']['total_size'] == sizes
        assert len(index['weight_map']) == len(model.state_dict())


@pytest.mark.parametrize('form', ['hf', 'timm', 'bin'])
def test_sharded_loads_equal_the_unsharded_load(saved, model, form):
    plain = regzoo.create_model(ARCH, checkpoint_path=saved['plain'])
    sharded = regzoo.create_model(ARCH, checkpoint_path=saved[form])
    expected = plain.state_dict()
    assert all(torch.equal(v, expected[k]) and v.dtype == expected[k].dtype for k, v in sharded.state_dict().items())
    assert torch.equal(_logits(sharded), _logits(plain)) and torch.equal(_logits(plain), _logits(model))


def test_transformers_reads_our_shards(saved, model):
    ref = transformers.RegNetForImageClassification.from_pretrained(saved['hf']).eval()
    with torch.no_grad():
        assert max_rel_diff(ref(X).logits, _logits(model)) <= 1e-5


@pytest.fixture(scope='module')
def hf_ref():
    """transformers' regnet-y-002 config (1000 classes), random weights and BN statistics: 3.2 M parameters."""
    torch.manual_seed(0)
    config = transformers.RegNetConfig(hidden_sizes=[24, 56, 152, 368], depths=[1, 1, 4, 7], groups_width=8,
                                       layer_type='y', num_labels=1000)
    return randomize_bn(transformers.RegNetForImageClassification(config)).eval()


@pytest.mark.parametrize('form', ['safetensors', 'bin'])
def test_transformers_shards_load_like_transformers(hf_ref, form, tmp_path):
    if form == 'safetensors':
        hf_ref.save_pretrained(tmp_path, max_shard_size='4MB')  # transformers' own writer
        assert len(_shards(tmp_path)) >= 3 and (tmp_path / 'model.safetensors.index.json').is_file()
    else:
        hf_ref.config.save_pretrained(tmp_path)
        assert len(write_bin_shards(dict(hf_ref.state_dict()), tmp_path, '4MB')) >= 3
    ours = regzoo.create_model('regnety_002', checkpoint_path=tmp_path)
    with torch.no_grad():
        assert max_rel_diff(_logits(ours), hf_ref(X).logits) <= 1e-5
    assert not any(t.is_meta for t in ours.state_dict().values())


def test_pretrained_weight_from_sharded_hub_repo(hf_ref, tmp_path, monkeypatch):
    """A weight whose hub repo holds pytorch_model.bin shards + index (as the 10B SEER repos do), from the HF cache
    (shards are symlinks into blobs/ there), offline with sockets refused."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    refuse_network(monkeypatch)
    with torch.no_grad():
        expected = hf_ref(X).logits
    folder = tmp_path / 'repo'
    write_bin_shards(dict(hf_ref.state_dict()), folder, '4MB')
    populate_hub_cache(tmp_path / 'hub', 'someone/regnet-y-002-sharded',
                       {p.name: p.read_bytes() for p in folder.iterdir()})
    overlay = dict(hf_hub_id='someone/regnet-y-002-sharded', hf_hub_filename='pytorch_model.bin.index.json',
                   url=None, num_classes=1000)
    ours = regzoo.create_model('regnety_002', pretrained=True, pretrained_cfg_overlay=overlay,
                               cache_dir=tmp_path / 'hub')
    assert max_rel_diff(_logits(ours), expected) <= 1e-5


def test_hub_repo_of_shards_only_loads_without_naming_its_index(hf_ref, tmp_path, monkeypatch):
    """A repo holding only safetensors shards + index (no single file) is found by its cfg with no file name,
    as transformers' big repos are laid out; offline, sockets refused."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    refuse_network(monkeypatch)
    hf_ref.save_pretrained(tmp_path / 'repo', max_shard_size='4MB')
    populate_hub_cache(tmp_path / 'hub', 'someone/shards-only',
                       {p.name: p.read_bytes() for p in (tmp_path / 'repo').iterdir()})
    overlay = dict(hf_hub_id='someone/shards-only', hf_hub_filename=None, url=None, num_classes=1000)
    ours = regzoo.create_model('regnety_002', pretrained=True, pretrained_cfg_overlay=overlay,
                               cache_dir=tmp_path / 'hub')
    with torch.no_grad():
        assert max_rel_diff(_logits(ours), hf_ref(X).logits) <= 1e-5


def test_cached_index_without_its_shards_names_them(hf_ref, tmp_path, monkeypatch):
    """An interrupted download left the index in the cache but not every shard: the error names the shard."""
    from regzoo.zoo.fetch import WeightsUnavailableError
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    refuse_network(monkeypatch)
    hf_ref.save_pretrained(tmp_path / 'repo', max_shard_size='4MB')
    files = {p.name: p.read_bytes() for p in (tmp_path / 'repo').iterdir()}
    lost = sorted(n for n in files if n.startswith('model-'))[1]
    del files[lost]
    populate_hub_cache(tmp_path / 'hub', 'someone/torn', files)
    overlay = dict(hf_hub_id='someone/torn', hf_hub_filename='model.safetensors.index.json', url=None)
    with pytest.raises(WeightsUnavailableError, match=f'not its shard\\(s\\) {lost}'):
        regzoo.create_model('regnety_002', pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=tmp_path / 'hub')


@pytest.mark.parametrize('form', ['timm', 'plain'])
def test_parameters_own_their_memory(saved, form):
    """The parameters of a model built on meta are not views of the files (safetensors maps them): rewriting
    the files in place afterwards changes nothing, and every parameter is aligned as torch allocates (64 bytes)."""
    loaded = regzoo.create_model(ARCH, checkpoint_path=saved[form])
    assert all(t.data_ptr() % 64 == 0 for t in loaded.state_dict().values() if t.numel())
    before = _logits(loaded)
    for shard in _shards(saved[form]) or [saved[form] / 'model.safetensors']:
        data = bytearray(shard.read_bytes())
        start = 8 + int.from_bytes(data[:8], 'little')
        with open(shard, 'r+b') as f:  # the same inode, zeroed after its header
            f.seek(start)
            f.write(bytes(len(data) - start))
        try:
            assert torch.equal(_logits(loaded), before)
        finally:
            shard.write_bytes(bytes(data))


def test_head_and_first_conv_are_fitted_across_shards(saved):
    """Another head size and input channels: the same model from the shards as from the single file."""
    kwargs = dict(num_classes=10, in_chans=1)
    plain = regzoo.create_model(ARCH, checkpoint_path=saved['plain'], **kwargs).state_dict()
    for form in ('hf', 'bin'):
        sharded = regzoo.create_model(ARCH, checkpoint_path=saved[form], **kwargs).state_dict()
        assert sharded.keys() == plain.keys() and all(torch.equal(v, plain[k]) for k, v in sharded.items())
    assert plain['stem.conv.weight'].shape[1] == 1 and plain['head.fc.weight'].shape[0] == 10


def test_dtype_and_existing_model_loads(saved, model):
    """dtype= casts shard by shard; load_checkpoint into a model built as usual copies into its parameters."""
    half = regzoo.create_model(ARCH, checkpoint_path=saved['hf'], dtype=torch.bfloat16)
    assert all(v.dtype == torch.bfloat16 for v in half.state_dict().values() if v.is_floating_point())
    assert torch.equal(half.state_dict()['s3.b1.conv2.conv.weight'],
                       model.state_dict()['s3.b1.conv2.conv.weight'].to(torch.bfloat16))
    built = regzoo.create_model(ARCH)
    params = dict(built.named_parameters())
    regzoo.load_checkpoint(built, saved['bin'])
    assert all(p is params[n] for n, p in built.named_parameters())  # loaded into, not replaced
    assert torch.equal(_logits(built), _logits(model))


def test_wrong_arch_names_missing_and_unexpected_keys(saved):
    with pytest.raises(CheckpointError, match=r"(?s)index\.json \(timm layout\) does not fit regnety_032:\n  missing "
                                              r"from the checkpoint .*\n  unexpected in the checkpoint .*\n  shape "
                                              r"mismatches .*its config.json says architecture 'regnety_040'"):
        regzoo.create_model('regnety_032', checkpoint_path=saved['timm'])


def test_nonfinite_weights_in_a_shard_are_named(model, tmp_path, caplog):
    broken = regzoo.create_model(ARCH)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.s3.b2.conv2.conv.weight[0, 0, 0, 0] = float('nan')
    folder = regzoo.save_pretrained(broken, tmp_path / 'nan', format='timm', max_shard_size=LIMIT)
    with pytest.raises(CheckpointError, match=r'model-\d{5}-of-\d{5}\.safetensors: NaN or Inf values in 1 '
                                              r'tensor\(s\): s3\.b2\.conv2\.conv\.weight'):
        regzoo.create_model(ARCH, checkpoint_path=folder)
    with caplog.at_level(logging.WARNING):
        loaded = regzoo.create_model(ARCH, checkpoint_path=folder, allow_nonfinite=True)
    assert 'allow_nonfinite=True' in caplog.text
    assert torch.isnan(loaded.s3.b2.conv2.conv.weight[0, 0, 0, 0])


def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / folder.name
    out.mkdir()
    for p in folder.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    return out


def _missing(folder):
    shard = _shards(folder)[1]
    shard.unlink()
    return shard.name, 'its shard .* is missing'


def _truncated(folder):
    shard = _shards(folder)[2]
    shard.write_bytes(shard.read_bytes()[:-1000])
    return shard.name, 'not a readable shard'


def _flipped(folder):
    shard = _shards(folder)[0]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0x10  # in the tensor data, after the header
    shard.write_bytes(bytes(data))
    return shard.name, 'corrupt: the tensor data of group .* no longer matches the xxh3-128'


def _unlisted(folder):
    index = folder / 'model.safetensors.index.json'
    content = json.loads(index.read_text())
    shard = content['weight_map'].pop(sorted(content['weight_map'])[0])
    index.write_text(json.dumps(content))
    return shard, 'holds 1 tensor.* the index does not list'


def _bin_truncated(folder):
    shard = _shards(folder, 'pytorch_model-*.bin')[1]
    shard.write_bytes(shard.read_bytes()[:len(shard.read_bytes()) // 2])
    return shard.name, 'not a readable shard'


BROKEN = {'missing shard': ('hf', _missing), 'truncated shard': ('timm', _truncated),
          'bit flip in a shard': ('timm', _flipped), 'tensor the index does not list': ('hf', _unlisted),
          'truncated .bin shard': ('bin', _bin_truncated)}


@pytest.mark.parametrize('case', list(BROKEN))
def test_damaged_shards_give_one_clear_error_naming_the_shard(saved, case, tmp_path):
    form, damage = BROKEN[case]
    folder = _copy(saved[form], tmp_path)
    name, message = damage(folder)
    with pytest.raises(CheckpointError, match=message) as info:
        regzoo.create_model(ARCH, checkpoint_path=folder)
    assert name in str(info.value)


def test_resaving_removes_the_other_layouts_weights(model, tmp_path):
    """A folder saved sharded, then unsharded (and back), holds only the new weights, so no reader picks old ones."""
    small = regzoo.create_model('regnety_002')
    regzoo.save_pretrained(model, tmp_path, format='timm', max_shard_size=LIMIT)
    regzoo.save_pretrained(small, tmp_path, format='timm', arch='regnety_002')
    assert not _shards(tmp_path) and not (tmp_path / 'model.safetensors.index.json').exists()
    assert torch.equal(_logits(regzoo.create_model('regnety_002', checkpoint_path=tmp_path)), _logits(small))
    regzoo.save_pretrained(model, tmp_path, format='timm', max_shard_size=LIMIT)
    assert not (tmp_path / 'model.safetensors').exists() and len(_shards(tmp_path)) >= 3
    assert torch.equal(_logits(regzoo.create_model(ARCH, checkpoint_path=tmp_path)), _logits(model))


def test_max_shard_size_reads_as_transformers_reads_it(tmp_path):
    assert parse_size('500MB') == 500 * 10 ** 6 and parse_size('5GB') == 5 * 10 ** 9
    assert parse_size('1.5GiB') == int(1.5 * 2 ** 30) and parse_size(' 10 kb') == 10_000 and parse_size(1000) == 1000
    for bad in ('5 gigs', 'MB', '0MB', 0, -1, True, 2.5, None):
        with pytest.raises(ValueError, match=r"max_shard_size=.* is invalid: give bytes as an int > 0 or a size "
                                             r"such as '500MB'"):
            parse_size(bad)
    with pytest.raises(ValueError, match='max_shard_size'):
        regzoo.save_pretrained(regzoo.create_model('regnety_002'), tmp_path / 'never', max_shard_size='lots')
    assert not (tmp_path / 'never').exists()


def _load_memory_benchmark():
    spec = importlib.util.spec_from_file_location('load_memory', ROOT / 'benchmarks' / 'load_memory.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('form', ['safetensors-shards', 'bin-shards'])
def test_sharded_load_peak_memory_stays_below_one_and_a_half_weights(form, tmp_path):
    """benchmarks/load_memory.py, small: a fresh process loads the shards; its peak resident memory above what it
    held before stays < 1.5x the weights (about the weights plus one tensor, or one .bin shard)."""
    bench = _load_memory_benchmark()
    arch = 'regnety_016'  # 45 MB: big enough that fixed overheads do not count
    folders, size, counts, _ = bench.save_forms(arch, 4, tmp_path)
    assert counts[form] >= 3

    def measure(folder: Path) -> dict:
        out = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'load_memory.py'), '--measure', str(folder),
                              '--arch', arch], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    # the reference is the unsharded file loaded by the same kind of fresh process: logits computed inside this
    # worker can differ in the last bits (oneDNN's kernel choice depends on the process's threads and state)
    result, reference = measure(folders[form]), measure(folders['plain'])
    assert result['logits'] == reference['logits']
    assert result['peak_bytes'] < 1.5 * size, f'peak {result["peak_bytes"] / size:.2f}x the weights'
