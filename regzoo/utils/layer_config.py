"""timm's layer-config switches (``timm.layers.config``), as accepted no-ops.

timm keeps module-level flags that make some of its layers pick a TorchScript-friendly, an
ONNX-exportable or a non-jit variant when a model is built. regzoo has one implementation of every layer,
and it is always all three: every model scripts with ``torch.jit.script``, exports with ``torch.onnx`` /
``torch.export``, and uses no jit-scripted layers. So there is nothing to switch: these functions and
context managers take timm's arguments, change nothing, and the ``is_*`` queries always answer True.
They exist so timm code (``with set_layer_config(scriptable=True): ...``) runs unchanged. No state is kept.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    'is_exportable', 'is_no_jit', 'is_scriptable', 'set_exportable', 'set_layer_config', 'set_no_jit',
    'set_scriptable',
]


def is_scriptable() -> bool:
    """Always True: every regzoo model scripts with ``torch.jit.script``."""
    return True


def is_exportable() -> bool:
    """Always True: every regzoo model exports (ONNX, ``torch.export``)."""
    return True


def is_no_jit() -> bool:
    """Always True: regzoo uses no jit-scripted layers."""
    return True


class _NoOpSwitch:
    """A timm layer-config switch that changes nothing (usable as a call and as a context manager)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: Any) -> bool:
        return False


class set_scriptable(_NoOpSwitch):  # lower-case: timm's names
    """``timm.layers.set_scriptable(mode)``; a no-op: regzoo models are always scriptable."""

    def __init__(self, mode: bool) -> None:
        self.mode = mode


class set_exportable(_NoOpSwitch):
    """``timm.layers.set_exportable(mode)``; a no-op: regzoo models are always exportable."""

    def __init__(self, mode: bool) -> None:
        self.mode = mode


class set_no_jit(_NoOpSwitch):
    """``timm.layers.set_no_jit(mode)``; a no-op: regzoo has no jit-scripted layers."""

    def __init__(self, mode: bool) -> None:
        self.mode = mode


class set_layer_config(_NoOpSwitch):
    """``timm.layers.set_layer_config(scriptable=, exportable=, no_jit=, no_activation_jit=)``; a no-op.

    timm's ``create_model`` wraps the build in it; regzoo's ``create_model`` accepts the same three
    arguments and ignores them for the same reason.
    """

    def __init__(
            self, scriptable: bool | None = None, exportable: bool | None = None, no_jit: bool | None = None,
            no_activation_jit: bool | None = None,
    ) -> None:
        self.scriptable, self.exportable, self.no_jit, self.no_activation_jit = (
            scriptable, exportable, no_jit, no_activation_jit)
