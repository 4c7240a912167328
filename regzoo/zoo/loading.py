"""Loading weights: find them (local file, HF hub cache/download, URL), read them safely, convert, fit, load strictly.

Nothing here unpickles arbitrary objects: files are read with safetensors or ``torch.load(weights_only=True)``.
A warm HF cache is read with ``local_files_only=True`` first, so a cached weight never costs a network call;
``HF_HUB_OFFLINE=1`` (read at call time, not at import like huggingface_hub does) forbids the network entirely.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn as nn

from regzoo.models.design import make_stages
from regzoo.models.layers import init_classifier
from regzoo.zoo.cfgs import MODEL_CFGS
from regzoo.zoo.convert import to_regzoo
from regzoo.zoo.pretrained import PretrainedCfg

_LOGGER = logging.getLogger(__name__)
HUB_FILENAMES = ('model.safetensors', 'pytorch_model.bin')  # safetensors first: it cannot carry code
DIR_FILENAMES = HUB_FILENAMES
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.pyth', '.torch', '.ckpt')
_TRUE = ('1', 'ON', 'YES', 'TRUE')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (corrupt, truncated, pickle-only) or does not fit the model."""


class WeightsUnavailableError(FileNotFoundError):
    """No source of a pretrained weight could be reached (offline and not cached, or every download failed)."""


@dataclass(frozen=True)
class Checkpoint:
    """Weights read from a file or directory, converted to our (timm's) key layout."""
    state_dict: Mapping[str, torch.Tensor]
    path: str
    source_format: str
    config: Mapping = field(default_factory=lambda: MappingProxyType({}))  # a saved dir's config.json

    @property
    def arch(self) -> str | None:
        return self.config.get('architecture')  # timm's hub config names it; HF's does not

    @property
    def model_args(self) -> dict:
        """Build kwargs a timm-style config.json records (in_chans, output_stride, RegNetCfg fields...)."""
        return dict(self.config.get('model_args') or {}) if self.arch else {}

    def num_classes(self, classifier: str = 'head.fc') -> int:
        weight = self.state_dict.get(f'{classifier}.weight')
        return 0 if weight is None else weight.shape[0]

    def in_chans(self, first_conv: str = 'stem.conv') -> int | None:
        """Input channels of the first conv (None when the checkpoint has no such weight)."""
        weight = self.state_dict.get(f'{first_conv}.weight')
        return None if weight is None or weight.ndim != 4 else weight.shape[1]

    def pretrained_cfg(self, arch: str) -> PretrainedCfg | None:
        """The eval settings a saved config.json carries (fields we do not know are dropped).

        timm's config has a ``pretrained_cfg``; HF's says only the input channels and the head size,
        and its labels are names, not a label set we know: the rest are the defaults.
        """
        if self.config.get('model_type') == 'regnet':
            return PretrainedCfg(arch, '', num_classes=self.num_classes(), label_set=None,
                                 input_size=(self.config.get('num_channels', 3), *PretrainedCfg.input_size[1:]))
        saved = self.config.get('pretrained_cfg') if self.arch else None
        if not saved:
            return None
        known = {f.name: f for f in dataclasses.fields(PretrainedCfg)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known}
        return PretrainedCfg(**{**values, 'arch': values.get('arch') or arch, 'tag': values.get('tag') or ''})


# ---------------------------------------------------------------------------------------------- reading files

def _read_file(path: Path) -> Mapping:
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own SafetensorError, or OSError/ValueError
            raise CheckpointError(f'{path}: not a readable safetensors file ({e}); it may be truncated or '
                                  'corrupt: delete it and fetch it again') from e
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        # a pickled class the safe unpickler does not allow: the file is fine, but not weights-only
        if blocked := re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(e)):
            raise CheckpointError(
                f'{path}: refusing to load: the file pickles Python objects beyond tensors and plain containers '
                f'(e.g. {blocked[1]}). regzoo reads weights only with torch.load(weights_only=True), because '
                'unpickling can run arbitrary code. If you trust the file, re-save just its weights: '
                'torch.save(torch.load(path, weights_only=False)["state_dict"], "weights.pth") '
                '(or better, safetensors.torch.save_file)') from e
        detail = str(e).split('WeightsUnpickler error:')[-1].strip().splitlines()[0]
        raise CheckpointError(f'{path}: not a readable torch checkpoint ({type(e).__name__}: {detail}); it may be '
                              'truncated or corrupt: delete it and fetch it again') from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{path}: holds a {type(obj).__name__}, not a state dict or checkpoint mapping')
    return obj


def _read_sharded(index_file: Path) -> dict[str, torch.Tensor]:
    shards = sorted(set(json.loads(index_file.read_text())['weight_map'].values()))
    state_dict = {}
    for shard in shards:
        state_dict.update(_read_file(index_file.parent / shard))
    return state_dict


def _dir_weights_file(path: Path) -> Path:
    for name in DIR_FILENAMES + ('model.safetensors.index.json',):
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.iterdir() if p.suffix in ('.safetensors',) + TORCH_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    found = ', '.join(p.name for p in candidates) or 'none'
    raise CheckpointError(f'{path}: expected {" or ".join(DIR_FILENAMES)} or a single weights file '
                          f'(*.safetensors, {", ".join("*" + s for s in TORCH_SUFFIXES)}); found: {found}')


def read_checkpoint(path: str | os.PathLike, source_format: str | None = None) -> Checkpoint:
    """Read a weights file or a saved directory and convert it to our layout (format auto-detected when None).

    A directory is read as timm / HF save it: ``model.safetensors``, else ``pytorch_model.bin``, else its
    single weights file; a ``config.json`` beside it names the arch (timm) or marks the HF layout.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    config = {}
    if path.is_dir():
        if (path / 'config.json').is_file():
            config = json.loads((path / 'config.json').read_text())
        path = _dir_weights_file(path)
    if source_format is None and config.get('model_type') == 'regnet':
        source_format = 'hf'
    raw = _read_sharded(path) if path.name.endswith('.index.json') else _read_file(path)
    try:
        state_dict, fmt = to_regzoo(raw, source_format)
    except ValueError as e:
        raise CheckpointError(f'{path}: {e}') from e
    return Checkpoint(state_dict, str(path), fmt, MappingProxyType(config))


# ---------------------------------------------------------------------------------------------- fitting + loading

def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Refit an RGB first-conv weight (out, 3, k, k) to ``in_chans`` inputs.

    1 channel: sum over RGB, so a grey image g gives exactly the activations of the RGB image (g, g, g).
    More: repeat RGB cyclically, scaled by 3 / in_chans so the summed input signal keeps its scale.
    """
    src = weight.shape[1]
    if src == in_chans:
        return weight
    if src != 3:
        raise CheckpointError(f'cannot adapt a first conv with {src} input channels to in_chans={in_chans}: '
                              'adaptation starts from 3-channel (RGB) weights')
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3 / in_chans)
    return w.to(weight.dtype)


def adapt_input_cfg(cfg: PretrainedCfg, in_chans: int) -> PretrainedCfg:
    """``cfg``'s eval settings for ``in_chans`` inputs, mirroring what ``adapt_input_conv`` does to the weights.

    Input sizes take the channel count. A per-channel mean/std of another length is pooled for 1 channel
    (the weights are summed over RGB, so one grey channel stands for all three) and repeated cyclically
    for more (as the weights are).
    """
    def fit(values: tuple[float, ...]) -> tuple[float, ...]:
        if len(values) == in_chans:
            return tuple(values)
        if in_chans == 1:
            return (sum(values) / len(values),)
        return tuple(values[i % len(values)] for i in range(in_chans))
    test = cfg.test_input_size
    return cfg.replace(input_size=(in_chans, *cfg.input_size[1:]), mean=fit(cfg.mean), std=fit(cfg.std),
                       test_input_size=None if test is None else (in_chans, *test[1:]))


def _arch_name(model: nn.Module) -> str:
    if getattr(model, 'arch', None):
        return model.arch
    cfg = getattr(model, 'pretrained_cfg', None)
    if cfg is not None and cfg.arch:
        return cfg.arch
    return next((a for a, c in MODEL_CFGS.items() if c == getattr(model, 'cfg', None)), type(model).__name__)


def _archs_matching(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Registered archs whose stage depths/widths and SE use equal the checkpoint's (pure shape math, no models)."""
    try:
        depths = {}
        for key in state_dict:
            if m := re.match(r's(\d+)\.b(\d+)\.', key):
                depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]))
        found = tuple((depths[i], state_dict[f's{i}.b1.conv3.conv.weight'].shape[0],
                       state_dict[f's{i}.b1.conv1.conv.weight'].shape[0]) for i in sorted(depths))
    except KeyError:
        return []
    has_se = any('.se.fc1.' in k for k in state_dict)
    return [a for a, c in MODEL_CFGS.items() if bool(c.se_ratio) == has_se
            and tuple((s.depth, s.width, s.bottleneck_width) for s in make_stages(c)) == found]


def _few(items: list[str], n: int = 8) -> str:
    return ', '.join(items[:n]) + (f', ... and {len(items) - n} more' if len(items) > n else '')


def _check_fits(model: nn.Module, checkpoint: Checkpoint, state_dict: Mapping[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f'{k} checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
              for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if not (missing or unexpected or shapes):
        return
    arch = _arch_name(model)
    lines = [f'checkpoint {checkpoint.path} ({checkpoint.source_format} layout) does not fit {arch}:']
    for label, items in (('missing from the checkpoint', missing), ('unexpected in the checkpoint', unexpected),
                         ('shape mismatches', shapes)):
        if items:
            lines.append(f'  {label} ({len(items)}): {_few(items)}')
    matching = [a for a in _archs_matching(state_dict) if a != arch]
    if checkpoint.arch and checkpoint.arch != arch:
        lines.append(f'  its config.json says architecture {checkpoint.arch!r}')
    elif matching:
        lines.append(f'  its shapes match: {", ".join(matching)}')
    raise CheckpointError('\n'.join(lines))


def apply_checkpoint(model: nn.Module, checkpoint: Checkpoint) -> None:
    """Load ``checkpoint`` into ``model`` strictly, after fitting the classifier and first conv.

    A classifier of another size is left out and re-initialised deterministically (``init_classifier``);
    a first conv for another channel count is adapted (``adapt_input_conv``). Both are logged.
    """
    cfg = getattr(model, 'pretrained_cfg', None) or PretrainedCfg('', '')
    arch, model_sd, state_dict = _arch_name(model), model.state_dict(), dict(checkpoint.state_dict)
    head = model.get_classifier()
    model_classes = head.out_features if isinstance(head, nn.Linear) else 0
    ckpt_classes = checkpoint.num_classes(cfg.classifier)
    head_keys = (f'{cfg.classifier}.weight', f'{cfg.classifier}.bias')
    if ckpt_classes != model_classes:
        # the model's own head stands in for the checkpoint's, so the strict check still covers everything else
        state_dict.update({k: model_sd[k] for k in head_keys if k in model_sd})
        state_dict = {k: v for k, v in state_dict.items() if k not in head_keys or k in model_sd}
        _LOGGER.info('%s: the weights have %d classes, the model %d: %s %s', arch, ckpt_classes, model_classes,
                     cfg.classifier, 're-initialised (init_classifier)' if model_classes else 'left out')
    conv_key = f'{cfg.first_conv}.weight'
    if conv_key in state_dict and conv_key in model_sd and state_dict[conv_key].shape[1] != model_sd[conv_key].shape[1]:
        _LOGGER.info('%s: adapting %s from %d to %d input channels', arch, cfg.first_conv,
                     state_dict[conv_key].shape[1], model_sd[conv_key].shape[1])
        state_dict[conv_key] = adapt_input_conv(state_dict[conv_key], model_sd[conv_key].shape[1])
    _check_fits(model, checkpoint, state_dict)
    model.load_state_dict(state_dict, strict=True)
    if ckpt_classes != model_classes and model_classes:
        init_classifier(head)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, source_format: str | None = None) -> Checkpoint:
    """Load a local weights file or saved directory (any supported layout) into ``model``."""
    checkpoint = read_checkpoint(path, source_format)
    apply_checkpoint(model, checkpoint)
    _LOGGER.info('%s: loaded %s (%s layout)', _arch_name(model), checkpoint.path, checkpoint.source_format)
    return checkpoint


# ---------------------------------------------------------------------------------------------- finding weights

def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE as set now (huggingface_hub itself reads them once, at import)."""
    from huggingface_hub import constants
    value = os.environ.get('HF_HUB_OFFLINE') or os.environ.get('TRANSFORMERS_OFFLINE') or ''
    return value.upper() in _TRUE or constants.HF_HUB_OFFLINE


def hub_cache_dir() -> Path:
    """The HF hub cache as the environment says now: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    env = os.environ
    home = env.get('HF_HOME') or os.path.join(env.get('XDG_CACHE_HOME') or '~/.cache', 'huggingface')
    return Path(env.get('HF_HUB_CACHE') or env.get('HUGGINGFACE_HUB_CACHE') or os.path.join(home, 'hub')).expanduser()


def url_cache_path(url: str) -> Path:
    """Where URL downloads are kept: torch.hub's checkpoints folder (TORCH_HOME), by file name."""
    return Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(url.split('?')[0])


def _from_hub(cfg: PretrainedCfg, offline: bool, attempts: list[str]) -> Path | None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    cache = hub_cache_dir()
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILENAMES
    for name in names:
        # the cache first, for every candidate, by a pure file-system lookup: even hf_hub_download(
        # local_files_only=True) builds request headers, which (huggingface_hub 2.x) may fetch from the Hub
        if isinstance(found := try_to_load_from_cache(cfg.hf_hub_id, name, cache_dir=cache), str):
            return Path(found)
    attempts.append(f'HF hub repo {cfg.hf_hub_id!r} ({", ".join(names)}): not in the cache {cache}')
    if offline:
        return None
    for name in names:
        try:
            return Path(hf_hub_download(cfg.hf_hub_id, name, cache_dir=cache))
        except LocalEntryNotFoundError as e:  # the hub could not be reached
            attempts.append(f'HF hub download of {cfg.hf_hub_id}/{name} failed: {e}')
            return None
        except EntryNotFoundError:  # reached, but the repo has no such file: try the next name
            continue
        except OSError as e:  # HTTP, connection and repo errors are all OSErrors in huggingface_hub
            attempts.append(f'HF hub download of {cfg.hf_hub_id}/{name} failed: {type(e).__name__}: {e}')
            return None
    attempts.append(f'HF hub repo {cfg.hf_hub_id!r} has none of {", ".join(names)}')
    return None


def _from_url(cfg: PretrainedCfg, offline: bool, attempts: list[str]) -> Path | None:
    dst = url_cache_path(cfg.url)
    if dst.is_file():
        return dst
    attempts.append(f'URL {cfg.url}: not in the cache {dst}')
    if offline:
        return None
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(cfg.url, str(dst), hash_prefix=cfg.sha256, progress=False)
    except RuntimeError as e:
        if 'invalid hash value' in str(e):  # torch.hub already removed the bad download
            raise CheckpointError(f'{cfg.name}: the file downloaded from {cfg.url} fails its sha256 check: {e}. '
                                  'The server copy changed or the transfer was corrupted; nothing was kept') from e
        attempts.append(f'URL download {cfg.url} failed: {e}')
        return None
    except OSError as e:
        attempts.append(f'URL download {cfg.url} failed: {type(e).__name__}: {e}')
        return None
    return dst


def fetch_pretrained(cfg: PretrainedCfg) -> tuple[Path, str | None]:
    """The local path of ``cfg``'s weights and their layout (None: detect), fetching them if needed.

    Order: ``cfg.file``; the HF hub (cache, then download); the URL (cache, then download with sha256 check).
    """
    if cfg.file:
        path = Path(cfg.file).expanduser()
        if not path.exists():
            raise FileNotFoundError(f'{cfg.name}: pretrained file {path} (pretrained_cfg_overlay file=) does not exist')
        return path, None
    offline, attempts = hub_offline(), []
    if cfg.hf_hub_id and (path := _from_hub(cfg, offline, attempts)):
        return path, None
    if cfg.url and (path := _from_url(cfg, offline, attempts)):
        return path, cfg.source_format
    if not (cfg.hf_hub_id or cfg.url):
        raise WeightsUnavailableError(f'{cfg.name}: no source to load from: the cfg has no hf_hub_id, url or file')
    fix = (f'run `hf download {cfg.hf_hub_id}` on a machine with network and copy its HF cache to '
           f'{hub_cache_dir()}, or ' if cfg.hf_hub_id else '')
    raise WeightsUnavailableError(
        f'{cfg.name}: pretrained weights not found' + (' offline (HF_HUB_OFFLINE is set)' if offline else '') + ':\n  '
        + '\n  '.join(attempts) + f'\nTo fix: {fix}pass pretrained_cfg_overlay=dict(file=PATH) or '
        'checkpoint_path=PATH with a local weights file or directory.')


def load_pretrained(model: nn.Module, cfg: PretrainedCfg) -> Checkpoint:
    """Fetch ``cfg``'s weights (file, hub, or URL) and load them into ``model`` (see ``apply_checkpoint``)."""
    path, source_format = fetch_pretrained(cfg)
    checkpoint = read_checkpoint(path, source_format)
    apply_checkpoint(model, checkpoint)
    _LOGGER.info('%s: loaded pretrained weights from %s', cfg.name, checkpoint.path)
    return checkpoint
