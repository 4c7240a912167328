"""Fitting a read checkpoint to a model and loading it strictly: the last step of loading.

A classifier of another size is left out and re-initialised; a first conv for another channel count is adapted
(timm's ``adapt_input_conv``); every remaining tensor must fit the model's name, shape and kind exactly, and
NaN/Inf weights are refused. The device and dtype the weights take are the caller's (``apply_checkpoint``'s
``device`` and ``dtype``, which ``create_model`` passes): a model built on the meta device takes the tensors
themselves (``load_tensors``), so the weights are never in memory twice.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn

from regzoo.models.design import make_stages
from regzoo.models.layers import init_classifier
from regzoo.utils.checksum import nonfinite_names
from regzoo.utils.names import few
from regzoo.zoo.cfgs import MODEL_CFGS
from regzoo.zoo.checkpoint import Checkpoint
from regzoo.zoo.convert import to_regzoo
from regzoo.zoo.diagnose import CheckpointError, shard_error
from regzoo.zoo.layout import TORCH_SUFFIXES
from regzoo.zoo.pretrained_cfg import PretrainedCfg
from regzoo.zoo.reading import read_verified
from regzoo.zoo.sharded import ShardError, is_index, meta_tensors, read_index, read_shards

_LOGGER = logging.getLogger(__name__)
_ALIGNMENT = 64  # bytes: torch's CPU allocator aligns every tensor so


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Refit an RGB first-conv weight (out, 3, k, k) to ``in_chans`` inputs: timm's ``adapt_input_conv``.

    1 channel: sum over RGB, so a grey image g gives exactly the activations of the RGB image (g, g, g).
    More: repeat RGB cyclically, scaled by 3 / in_chans so the summed input signal keeps its scale.
    Unlike timm, a first conv of another channel count than 3 is refused with a ``CheckpointError``: timm
    would sum a 6- or 12-channel weight's RGB groups (its space-to-depth stems), which a RegNet stem is not.
    """
    from timm.models._manipulate import adapt_input_conv as timm_adapt_input_conv
    src = weight.shape[1]
    if src == in_chans:
        return weight
    if src != 3:
        raise CheckpointError(f'cannot adapt a first conv with {src} input channels to in_chans={in_chans}: '
                              'adaptation starts from 3-channel (RGB) weights')
    return timm_adapt_input_conv(in_chans, weight)


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


def arch_name(model: nn.Module) -> str:
    """The registered arch a model was built as (for messages)."""
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


def _check_fits(model: nn.Module, checkpoint: Checkpoint, state_dict: Mapping[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f'{k} checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
              for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    # a float weight stored as integers (or a counter as floats) is not a cast, it is the wrong data
    dtypes = [f'{k} checkpoint {str(v.dtype).removeprefix("torch.")} vs model '
              f'{str(expected[k].dtype).removeprefix("torch.")}' for k, v in state_dict.items()
              if k in expected and (v.is_floating_point() != expected[k].is_floating_point()
                                    or v.is_complex() or v.dtype == torch.bool)]
    if not (missing or unexpected or shapes or dtypes):
        return
    arch = arch_name(model)
    lines = [f'checkpoint {checkpoint.path} ({checkpoint.source_format} layout) does not fit {arch}:']
    for label, items in (('missing from the checkpoint', missing), ('unexpected in the checkpoint', unexpected),
                         ('shape mismatches', shapes), ('dtype mismatches', dtypes)):
        if items:
            lines.append(f'  {label} ({len(items)}): {few(items)}')
    matching = [a for a in _archs_matching(state_dict) if a != arch]
    if checkpoint.arch and checkpoint.arch != arch:
        lines.append(f'  its config.json says architecture {checkpoint.arch!r}')
    elif matching:
        lines.append(f'  its shapes match: {", ".join(matching)}')
    raise CheckpointError('\n'.join(lines))


def check_finite(state_dict: Mapping[str, torch.Tensor], path: str, allow_nonfinite: bool = False) -> None:
    """NaN/Inf in the weights read from ``path``: a ``CheckpointError`` naming the file and the first bad
    tensors, or with ``allow_nonfinite=True`` a warning."""
    bad = nonfinite_names(state_dict)
    if not bad:
        return
    what = f'{path}: NaN or Inf values in {len(bad)} tensor(s): {few(bad, 5)}'
    if not allow_nonfinite:
        raise CheckpointError(f'{what}; the weights are broken (a diverged run or a damaged file); '
                              'pass allow_nonfinite=True to load them anyway')
    _LOGGER.warning('%s; loading them anyway (allow_nonfinite=True)', what)


def load_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor], device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, copy: bool = True) -> None:
    """Put ``tensors`` (names of ``model``'s state dict, already checked) into ``model``: the one assignment of
    weights into a model, for a whole checkpoint and for each shard of a sharded one.

    Where the model's tensor is on the meta device, a tensor on ``device`` (default: torch's default device, CPU
    unless set) in ``dtype`` (floating tensors; default, and for the others: the dtype the model was built with)
    takes its place (``load_state_dict(assign=True)``): with ``copy=False`` the
    given tensor itself when it already is one, contiguous and aligned as torch allocates (pass it only for
    tensors that own their memory, as ``torch.load`` gives them; safetensors maps its tensors from the file,
    and a parameter must not live in a file mapping), else a copy. A real tensor of the model is copied
    into, as ``load_state_dict`` always does.
    """
    device = torch.get_default_device() if device is None else torch.device(device)
    own = model.state_dict(keep_vars=True)
    def dtype_of(k: str) -> torch.dtype:
        return dtype if dtype is not None and own[k].is_floating_point() else own[k].dtype
    assign = {k: _placed(v, device, dtype_of(k), copy) for k, v in tensors.items() if own[k].is_meta}
    into = {k: v for k, v in tensors.items() if not own[k].is_meta}
    for part, by_assignment in ((assign, True), (into, False)):
        if part:
            # the module versions every state_dict() carries: without them a BatchNorm reads the part as a
            # pre-version-2 checkpoint and loads a default num_batches_tracked (0) when the part lacks its own
            part = OrderedDict(part)
            part._metadata = getattr(own, '_metadata', None)
            model.load_state_dict(part, strict=False, assign=by_assignment)


def _placed(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype, copy: bool) -> torch.Tensor:
    """``tensor`` as a parameter on ``device`` in ``dtype``: a new tensor, or (``copy=False``) itself if it fits.

    Alignment counts: oneDNN runs other (slower, numerically different) kernels on weights not aligned as
    torch's allocator aligns them (64 bytes), and a tensor inside a file's buffer (safetensors: 8 bytes) is not.
    """
    out = tensor.to(device=device, dtype=dtype)
    if out is tensor and (copy or not out.is_contiguous() or out.data_ptr() % _ALIGNMENT):
        out = out.clone(memory_format=torch.contiguous_format)
    return out.contiguous()


def _load_shards(model: nn.Module, checkpoint: Checkpoint, fit, allow_nonfinite: bool, device, dtype) -> None:
    """Read a sharded checkpoint into ``model`` one shard at a time: each shard is read and verified by the one
    reader (``regzoo.zoo.reading.read_verified``), converted along with the rest of the checkpoint's names (a
    layout may need them all: HF's X vs Y blocks), checked for NaN/Inf, fitted by ``fit`` and loaded."""
    try:
        index = read_index(checkpoint.path)
        placeholders = meta_tensors(index)
        for shard, tensors in read_shards(index, placeholders, read_verified):
            try:
                converted, _ = to_regzoo({**placeholders, **tensors}, checkpoint.source_format)
            except ValueError as e:
                raise CheckpointError(f'{shard}: {e}') from e
            part = {k: v for k, v in converted.items() if not v.is_meta}
            check_finite(part, str(shard), allow_nonfinite)
            load_tensors(model, fit(part), device, dtype, copy=False)  # read_verified's tensors own their memory
            del tensors, converted, part  # this shard's data goes before the next one is read
    except ShardError as e:
        raise shard_error(e) from e


def apply_checkpoint(model: nn.Module, checkpoint: Checkpoint, allow_nonfinite: bool = False,
                     device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
    """Load ``checkpoint`` into ``model`` strictly, after fitting the classifier and first conv.

    A classifier of another size is left out and re-initialised deterministically (``init_classifier``);
    a first conv for another channel count is adapted (``adapt_input_conv``). Both are logged.
    NaN/Inf weights raise ``CheckpointError`` unless ``allow_nonfinite`` (then a warning; ``check_finite``);
    a file regzoo wrote finite and whose digests verify is not scanned again (``Checkpoint.finite_when_written``).
    The file's bytes are verified first (``Checkpoint.verify``).

    A model built on the meta device takes the checkpoint's tensors themselves, put on ``device`` (default:
    torch's default device, CPU unless set) and cast to ``dtype`` (default: the dtype the model was built in),
    so the weights are never in memory twice.
    A sharded checkpoint (its tensors are meta tensors: ``read_checkpoint`` of an ``*.index.json``) is checked
    whole against the model first, then read, converted, checked for NaN/Inf and loaded one shard at a time.
    """
    checkpoint.verify()
    sharded = is_index(checkpoint.path)
    if not sharded:
        if no_data := [k for k, v in checkpoint.state_dict.items() if v.is_meta]:
            raise CheckpointError(f'{checkpoint.path}: holds tensors without data (saved from the meta device): '
                                  f'{few(no_data, 5)}')
        if not checkpoint.finite_when_written:  # else the verified digests already vouch for it
            check_finite(checkpoint.state_dict, checkpoint.path, allow_nonfinite)
    cfg = getattr(model, 'pretrained_cfg', None) or PretrainedCfg('', '')
    arch, model_sd = arch_name(model), model.state_dict()
    head = model.get_classifier()
    model_classes = head.out_features if isinstance(head, nn.Linear) else 0
    ckpt_classes = checkpoint.num_classes(cfg.classifier)
    head_keys = (f'{cfg.classifier}.weight', f'{cfg.classifier}.bias')
    new_head = ckpt_classes != model_classes
    if new_head:
        _LOGGER.info('%s: the weights have %d classes, the model %d: %s %s', arch, ckpt_classes, model_classes,
                     cfg.classifier, 're-initialised (init_classifier)' if model_classes else 'left out')
    conv_key = f'{cfg.first_conv}.weight'
    ckpt_conv, model_conv = checkpoint.state_dict.get(conv_key), model_sd.get(conv_key)
    adapt = (ckpt_conv is not None and model_conv is not None and ckpt_conv.ndim == model_conv.ndim == 4
             and ckpt_conv.shape[1] != model_conv.shape[1])
    if adapt:
        _LOGGER.info('%s: adapting %s from %d to %d input channels', arch, cfg.first_conv, ckpt_conv.shape[1],
                     model_conv.shape[1])

    def fit(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors (all, or one shard's) as the model takes them."""
        out = {k: v for k, v in tensors.items() if not (new_head and k in head_keys)}
        if adapt and conv_key in out:
            out[conv_key] = adapt_input_conv(out[conv_key], model_conv.shape[1])
        return out

    state_dict = fit(checkpoint.state_dict)
    # the model's own head stands in for a replaced one, so the strict check still covers everything else
    own_head = {k: model_sd[k] for k in head_keys if new_head and k in model_sd}
    _check_fits(model, checkpoint, {**state_dict, **own_head})
    if sharded:
        _load_shards(model, checkpoint, fit, allow_nonfinite, device, dtype)
    elif any(v.is_meta for v in model_sd.values()):
        # torch.load's tensors own their memory and may become the parameters; safetensors' live in its mapping
        load_tensors(model, state_dict, device, dtype, copy=not checkpoint.path.endswith(TORCH_SUFFIXES))
    else:
        model.load_state_dict({**state_dict, **own_head}, strict=True)
    if new_head and model_classes:
        if head.weight.is_meta:  # a model built on meta: the new head gets its memory here
            head.to_empty(device=torch.get_default_device() if device is None else device)
        init_classifier(head)
