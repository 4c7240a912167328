"""Publish a model on the Hugging Face Hub: ``regzoo.push_to_hub(model, 'me/regnety_032-flowers')``.

What is uploaded is ``save_pretrained``'s folder (``model.safetensors`` + ``config.json``, timm's hub layout by
default, so ``create_model('hf-hub:me/...')`` and ``timm.create_model('hf-hub:me/...')`` both read it) with a model
card naming the repo, FLOPs included (``regzoo.zoo.card``). ``prepare_upload`` writes that folder without any
network, so it can be checked, or uploaded later with ``hf upload REPO DIR``. The upload is huggingface_hub's own:
``create_repo(exist_ok=True)``, then ``upload_folder``.

With no hub in reach (``HF_HUB_OFFLINE=1``, or no connection within ``REGZOO_CONNECT_TIMEOUT``: the probe of
``regzoo.zoo.fetch``) the push fails at once with ``HubUnreachableError``, before anything is saved or created,
instead of after huggingface_hub's retries. This module is in ``deploy``, not ``zoo`` beside ``save_pretrained``,
because the card's FLOPs are ``regzoo.complexity``'s, an ``analysis`` function.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch.nn as nn

from regzoo.analysis.complexity import BlockOptions, stage_complexity
from regzoo.models.regnet import RegNet
from regzoo.zoo.card import CARD_NAME, is_regzoo_card, model_card, write_model_card
from regzoo.zoo.fetch import hub_offline, unreachable
from regzoo.zoo.saving import SAVE_FORMATS, save_pretrained

# weight files of an earlier push that the new upload replaces: left behind, a stale shard index would win
_WEIGHT_PATTERNS = ['*.safetensors', '*.safetensors.index.json', '*.bin', '*.bin.index.json']


class HubUnreachableError(ConnectionError):
    """The Hugging Face Hub cannot be reached (offline mode, or no connection): nothing was uploaded."""


def model_complexity(model: RegNet) -> dict[str, int]:
    """``regzoo.complexity``'s ``dict(flops, params, acts)`` of ``model`` as built (its stages, classifier and input
    channels) at its weights' nominal image size (``pretrained_cfg.input_size``, as timm's cards give GMACs)."""
    cfg = getattr(model, 'pretrained_cfg', None)
    size = tuple(cfg.input_size[1:]) if cfg is not None else (224, 224)
    return stage_complexity(model.stage_specs, BlockOptions.of(model.cfg), size, model.num_classes, model.in_chans)


def _check(model: nn.Module, repo_id: str, format: str) -> None:
    """The arguments, checked before any network or file work."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f'repo_id {repo_id!r} is not a Hub repo id (NAME or NAMESPACE/NAME): {e}') from None
    if format not in SAVE_FORMATS:
        raise ValueError(f'unknown format {format!r}; valid: {", ".join(SAVE_FORMATS)}')
    if not isinstance(model, RegNet):
        raise TypeError(f'push_to_hub needs a regzoo.RegNet, got {type(model).__name__}; '
                        'for a features_only model push the model it wraps')


def prepare_upload(model: RegNet, folder: str | os.PathLike, repo_id: str, *, format: str = 'timm',
                   arch: str | None = None, **save_kwargs) -> Path:
    """The folder ``push_to_hub`` uploads, written to ``folder`` with no network: ``save_pretrained`` (weights and
    config.json in ``format``) plus the model card for ``repo_id`` (a README.md regzoo did not write is kept).
    ``save_kwargs`` go to ``save_pretrained``."""
    _check(model, repo_id, format)
    out = save_pretrained(model, folder, format=format, arch=arch, card=False, **save_kwargs)
    write_model_card(out, model_card(model, arch, repo_id, folder=out, format=format,
                                     complexity=model_complexity(model)))
    return out


def hub_unreachable_reason() -> str | None:
    """Why the Hub cannot be reached now (offline mode, or its host refuses / does not answer), or None."""
    if hub_offline():
        return 'HF_HUB_OFFLINE is set; unset it (or set it to 0) to upload'
    from huggingface_hub import constants
    return unreachable([constants.ENDPOINT]).get(constants.ENDPOINT)


def _keep_hub_readme(api, repo_id: str, revision: str | None) -> bool:
    """True when the repo already has a README.md that regzoo did not write (the same rule as a local save)."""
    if not api.file_exists(repo_id, CARD_NAME, revision=revision):
        return False
    path = api.hf_hub_download(repo_id, CARD_NAME, revision=revision)
    return not is_regzoo_card(Path(path).read_text(encoding='utf-8', errors='replace'))


def push_to_hub(model: RegNet, repo_id: str, *, format: str = 'timm', arch: str | None = None,
                token: str | bool | None = None, private: bool | None = None, commit_message: str | None = None,
                revision: str | None = None, create_pr: bool = False, **save_kwargs):
    """Upload ``model`` to the Hub repo ``repo_id`` (created if missing) with its model card; returns the
    ``CommitInfo`` of huggingface_hub's ``upload_folder``.

    Args:
        model: a ``regzoo.RegNet``.
        repo_id: 'NAMESPACE/NAME' (or 'NAME': your own namespace).
        format: 'timm' (default: ``create_model('hf-hub:' + repo_id)`` and timm read it) or 'hf' (transformers).
        arch: the registered architecture name (default: the one the model was built as).
        token: the Hub token (default: huggingface_hub's: ``HF_TOKEN`` or ``hf auth login``).
        private: create a new repo private (an existing repo keeps its visibility).
        commit_message: the commit's message (default: 'Upload ARCH with regzoo').
        revision: the branch to commit to (created from main if missing).
        create_pr: open a pull request instead of committing directly.
        **save_kwargs: further ``save_pretrained`` arguments.

    A README.md already on the Hub is replaced only when regzoo wrote it; weight files of an earlier push are
    replaced (removed in the same commit when the new upload has other names). Raises ``HubUnreachableError`` at
    once when the Hub cannot be reached; nothing is then created or uploaded.
    """
    _check(model, repo_id, format)
    if reason := hub_unreachable_reason():
        raise HubUnreachableError(
            f'push_to_hub: cannot reach the Hugging Face Hub to upload {repo_id!r}: {reason}. Nothing was uploaded. '
            'To publish from another machine: regzoo.deploy.hub.prepare_upload(model, DIR, repo_id) writes the '
            f'folder here, then `hf upload {repo_id} DIR` uploads it.')
    from huggingface_hub import HfApi
    api = HfApi(token=token, library_name='regzoo')
    with tempfile.TemporaryDirectory(prefix='regzoo-push-') as tmp:
        prepare_upload(model, tmp, repo_id, format=format, arch=arch, **save_kwargs)  # before the repo exists
        resolved = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if resolved != repo_id:  # 'NAME' went to the token's namespace: the card names the repo users load
            write_model_card(tmp, model_card(model, arch, resolved, folder=tmp, format=format,
                                             complexity=model_complexity(model)))
        if revision is not None and not revision.startswith('refs/pr/'):
            api.create_branch(resolved, branch=revision, exist_ok=True)
        keep_readme = _keep_hub_readme(api, resolved, revision)
        return api.upload_folder(
            repo_id=resolved, folder_path=tmp, revision=revision, create_pr=create_pr,
            commit_message=commit_message or f'Upload {arch or getattr(model, "arch", "RegNet")} with regzoo',
            ignore_patterns=[CARD_NAME] if keep_readme else None, delete_patterns=_WEIGHT_PATTERNS)
