"""Helpers the test modules import (``from helpers import ...``): synthetic image folders, BN randomising,
tensor comparison, arch parametrisation, a local HF hub cache in huggingface_hub's layout, refusing the network.
conftest.py only configures pytest; nothing is imported from it.

Images come from the library's one generator (``regzoo.data.synthetic``), the same the demo and the
benchmark use; BN randomising is the library's (``regzoo.models.layers.randomize_bn``), the same the
benchmark gives every variant.
"""
from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import torch

from regzoo.data.synthetic import write_image_folder
from regzoo.models.layers import randomize_bn

__all__ = ['HUGE_ARCHS', 'arch_params', 'cache_timm_weights', 'class_folders', 'learnable_splits', 'max_rel_diff',
           'populate_hub_cache', 'randomize_bn', 'refuse_network', 'train_stopped_by_sigterm']

# SEER sizes: 0.6-1.3 B parameters; building them costs many GB and seconds, so their heavy checks are opt-in
HUGE_ARCHS = ('regnety_1280', 'regnety_2560')


def arch_params(names):
    """pytest params over arch names, with the SEER giants marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in HUGE_ARCHS else n for n in names]


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |a|: one number for "equal up to float error" at any logit scale."""
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


def learnable_splits(root: Path, classes: int | Sequence[str] = 10, train: int = 16, val: int = 5,
                     size: int | tuple[int, int] = 32, seed: int = 0, exts: Sequence[str] = ('.png',)) -> Path:
    """``root/train/<class>/`` and ``root/val/<class>/`` of synthetic images a short training run learns."""
    return write_image_folder(root, classes, {'train': train, 'val': val}, size, seed, exts)


def class_folders(root: Path, classes: Sequence[str], n: int = 2, ext: str = '.JPEG', size: int = 8) -> Path:
    """Tiny class folders, for tests of folder layout and label order where the pixels do not matter."""
    return write_image_folder(root, classes, n, size, seed=0, exts=(ext,))


def populate_hub_cache(cache: Path, repo_id: str, files: Mapping[str, bytes]) -> Path:
    """Lay files out exactly as hf_hub_download stores them: blobs/<sha256>, snapshots/<commit>/<name> -> blob,
    refs/main -> commit."""
    repo_dir = Path(cache) / f'models--{repo_id.replace("/", "--")}'
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo_dir / 'refs').mkdir(parents=True)
    (repo_dir / 'refs' / 'main').write_text(commit)
    (repo_dir / 'blobs').mkdir()
    (repo_dir / 'snapshots' / commit).mkdir(parents=True)
    for name, data in files.items():
        etag = hashlib.sha256(data).hexdigest()
        (repo_dir / 'blobs' / etag).write_bytes(data)
        (repo_dir / 'snapshots' / commit / name).symlink_to(f'../../blobs/{etag}')
    return repo_dir


def cache_timm_weights(cache: Path, model: torch.nn.Module, repo_id: str) -> Path:
    """``model`` (a timm model) as timm publishes it on the hub (``model.safetensors`` + ``config.json``, written
    by timm's own ``save_for_hf``), put into the HF cache ``cache`` as ``repo_id`` ('timm/regnetx_002.pycls_in1k')."""
    from timm.models._hub import save_for_hf

    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tmp, safe_serialization=True)
        files = {name: (Path(tmp) / name).read_bytes() for name in ('model.safetensors', 'config.json')}
    return populate_hub_cache(cache, repo_id, files)


def refuse_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Refuse (and record) every name lookup and connection, at the OS boundary; returns the attempts."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError(f'test forbids network access {args}')
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    monkeypatch.setattr(socket.socket, 'connect', lambda self, *args: refuse(*args))
    return attempts


# archs regzoo has and timm does not (the 10B SEER model: HF transformers and vissl have it): tests of parity with
# timm leave them out; transformers' model is their reference (tests/test_seer_10b.py)
NOT_IN_TIMM = ('regnety_10b',)
# archs too big to build with real memory in a test (regnety_10b: 9.35 B parameters, 37 GB of fp32): only ever built
# on the meta device
META_ONLY_ARCHS = ('regnety_10b',)


def buildable(names) -> list[str]:
    """``names`` without the archs tests only build on the meta device (``META_ONLY_ARCHS``)."""
    return [n for n in names if n not in META_ONLY_ARCHS]


def offline_caches(root: Path, monkeypatch) -> Path:
    """Empty HF and torch hub caches under ``root``, offline (regzoo reads these variables at call time);
    returns the HF hub cache, ``root/hf/hub``."""
    monkeypatch.setenv('HF_HUB_CACHE', str(root / 'hf' / 'hub'))
    monkeypatch.setenv('HF_HOME', str(root / 'hf'))
    monkeypatch.setenv('TORCH_HOME', str(root / 'torch'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    return root / 'hf' / 'hub'


def train_stopped_by_sigterm(argv: Sequence[str], at_line: str, env: Mapping[str, str]) -> str:
    """Run ``train.py argv`` (unbuffered ``env``), send it SIGTERM once a stdout line starts with ``at_line``;
    check it saved and exited with 128 + SIGTERM, and return its stdout after that line."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, str(repo / 'train.py'), *argv], cwd=repo, env=dict(env),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith(at_line):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, rest
    return rest
