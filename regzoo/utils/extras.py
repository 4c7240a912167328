"""Optional dependencies: import one where a feature needs it, or fail with the pip command that adds it.

The extras are declared in pyproject.toml: ``export`` (onnx, onnxruntime, onnxscript), ``plot``
(matplotlib), ``quantize`` (torchao) and ``data`` (webdataset, datasets: shards and HF dataset folders). A plain ``pip install regzoo`` has neither, so ONNX export and plotting import them here,
at call time, instead of at module level.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import and return ``module``, or raise ``MissingExtraError`` naming ``pip install 'regzoo[extra]'``.

    ``purpose`` starts the message: ``require('onnx', 'export', 'ONNX export')`` raises
    "ONNX export needs onnx; install it with: pip install 'regzoo[export]'". Only the absence of
    ``module`` itself (or a parent package) is translated; an installed module that fails on import
    keeps its own error.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        parts = module.split('.')
        if e.name not in {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}:
            raise
        raise MissingExtraError(
            f"{purpose} needs {e.name}; install it with: pip install 'regzoo[{extra}]'", name=e.name) from None
