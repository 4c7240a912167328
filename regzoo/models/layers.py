"""The small layer set RegNet is built from: conv-norm-act, squeeze-excitation, drop-path, classifier head.

Attribute names (``conv``, ``bn``, ``fc1``, ``fc2``, ``fc``) are chosen so state-dict keys equal timm's.
Pooling is written as ``mean``/``amax`` over H, W rather than adaptive pooling: it scripts, exports
to ONNX for any input size and compiles without graph breaks.
"""
# No ``from __future__ import annotations`` here: torch.fx copies the root ``forward``'s annotations into the
# code it generates, and string annotations there (``_torch_Tensor_``) make ``torch.jit.script`` of a traced
# model fail. Annotations in modules with a ``forward`` stay real types (Python >= 3.10 evaluates ``X | None``).

import torch
import torch.nn as nn
import torch.nn.functional as F

_ACT_LAYERS = {'relu': nn.ReLU, 'silu': nn.SiLU, 'gelu': nn.GELU}
POOL_TYPES = ('avg', 'max', 'avgmax', '')


def create_act(name: str, inplace: bool = True) -> nn.Module:
    layer = _ACT_LAYERS[name]
    return layer() if layer is nn.GELU else layer(inplace=inplace)


def create_norm(name: str, num_features: int) -> nn.Module:
    if name != 'batchnorm':
        raise ValueError(f'unknown norm {name!r}')
    return nn.BatchNorm2d(num_features)


class ConvNormAct(nn.Module):
    """Conv2d (no bias, 'same' padding for odd kernels) -> norm -> optional activation."""

    def __init__(
            self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, dilation: int = 1,
            groups: int = 1, act: str | None = 'relu', norm: str = 'batchnorm',
    ):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride=stride, padding=padding, dilation=dilation,
            groups=groups, bias=False)
        self.bn = create_norm(norm, out_chs)
        self.act = create_act(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel gates from the spatial mean, through a ``rd_chs`` bottleneck.

    RegNet sizes ``rd_chs`` from the *block input* width (round(se_ratio * in_chs)), not from the
    width the SE sits in (pycls issue #81; timm and torchvision agree).
    """

    def __init__(self, chs: int, rd_chs: int, act: str = 'relu'):
        super().__init__()
        self.fc1 = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act = create_act(act)
        self.fc2 = nn.Conv2d(rd_chs, chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * s.sigmoid()


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch per sample with probability ``drop_prob`` in training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


def global_pool(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """Pool NCHW to NC (or pass through for ``''``)."""
    if pool_type == 'avg':
        return x.mean((2, 3))
    if pool_type == 'max':
        return x.amax((2, 3))
    if pool_type == 'avgmax':
        return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))
    return x


def check_pool_type(pool_type: str, num_classes: int) -> None:
    if pool_type not in POOL_TYPES:
        raise ValueError(f'global_pool={pool_type!r} is invalid: must be one of {POOL_TYPES}')
    if not pool_type and num_classes:
        raise ValueError("global_pool='' (no pooling) needs num_classes=0: a linear classifier needs pooled features")


def init_classifier(fc: nn.Linear) -> None:
    """Deterministic head init (normal std 0.01, zero bias), whatever the global RNG state.

    Building with ``num_classes=n`` and calling ``reset_classifier(n)`` later give the same head.
    """
    if fc.weight.is_meta:
        return  # built on the meta device: shapes only (the 10B's head would be a 113 MB draw for nothing)
    gen = torch.Generator(device='cpu').manual_seed(0)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen, device='cpu') * 0.01)
        fc.bias.zero_()


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm2d of ``model`` non-trivial affine params and running stats, from ``seed``.

    Fresh models have identity BNs, which fold into convs trivially and hide BN-handling bugs; the
    benchmark and the parity tests use this to give every implementation the same non-trivial BNs.
    Works on any module (timm's, torchvision's, HF's), in place; returns ``model``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model


class ClassifierHead(nn.Module):
    """Global pooling -> dropout -> linear classifier (``fc`` is Identity when ``num_classes=0``)."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = 'avg', drop_rate: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.drop_rate = drop_rate
        self.reset(num_classes, pool_type)

    def reset(
            self, num_classes: int, pool_type: str | None = None, device: torch.device | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        """New classifier on ``device``/``dtype`` (default: the old classifier's, else torch's defaults)."""
        pool_type = self.pool_type if pool_type is None else pool_type
        check_pool_type(pool_type, num_classes)
        self.pool_type = pool_type
        device = device or next((p.device for p in self.parameters()), None)
        dtype = dtype or next((p.dtype for p in self.parameters()), None)
        if num_classes:
            self.fc = nn.Linear(self.in_features, num_classes, device=device, dtype=dtype)
            init_classifier(self.fc)
        else:
            self.fc = nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = global_pool(x, self.pool_type)
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)
