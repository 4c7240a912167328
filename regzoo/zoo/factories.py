"""One decorated factory per registered architecture: ``regzoo.create_model('regnety_032')`` calls ``regnety_032``.

Each factory reads its cfg from the table in ``regzoo.zoo.cfgs`` and builds through the one pipeline,
``regzoo.zoo.builder.build_regnet``. Register your own RegNet the same way::

    from regzoo import RegNetCfg, register_model
    from regzoo.zoo.builder import build_regnet

    @register_model
    def my_regnet(pretrained: bool = False, **kwargs):
        '''My RegNetY variant.'''
        return build_regnet('my_regnet', RegNetCfg(w0=32, wa=20.0, wm=2.5, depth=12, group_size=8,
                                                   se_ratio=0.25), pretrained=pretrained, **kwargs)

Docstrings give GFLOPs (multiply-adds at 224x224, pycls's convention) and parameters (1000 classes);
``tests/test_registry.py`` checks them against ``regzoo.complexity``.
"""
from __future__ import annotations

from regzoo.models.regnet import RegNet
from regzoo.zoo.builder import build_regnet
from regzoo.zoo.cfgs import MODEL_CFGS, aliases
from regzoo.zoo.registry import REGISTRY, register_model


@register_model
def regnetx_002(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-200MF: 0.20 GFLOPs, 2.7 M params."""
    return build_regnet('regnetx_002', MODEL_CFGS['regnetx_002'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_004(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-400MF: 0.40 GFLOPs, 5.2 M params."""
    return build_regnet('regnetx_004', MODEL_CFGS['regnetx_004'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_004_tv(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-400MF, torchvision's width rounding: 0.41 GFLOPs, 5.5 M params."""
    return build_regnet('regnetx_004_tv', MODEL_CFGS['regnetx_004_tv'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_006(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-600MF: 0.60 GFLOPs, 6.2 M params."""
    return build_regnet('regnetx_006', MODEL_CFGS['regnetx_006'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_008(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-800MF: 0.80 GFLOPs, 7.3 M params."""
    return build_regnet('regnetx_008', MODEL_CFGS['regnetx_008'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_016(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-1.6GF: 1.60 GFLOPs, 9.2 M params."""
    return build_regnet('regnetx_016', MODEL_CFGS['regnetx_016'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_032(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-3.2GF: 3.18 GFLOPs, 15.3 M params."""
    return build_regnet('regnetx_032', MODEL_CFGS['regnetx_032'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_040(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-4.0GF: 3.96 GFLOPs, 22.1 M params."""
    return build_regnet('regnetx_040', MODEL_CFGS['regnetx_040'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_064(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-6.4GF: 6.46 GFLOPs, 26.2 M params."""
    return build_regnet('regnetx_064', MODEL_CFGS['regnetx_064'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_080(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-8.0GF: 8.00 GFLOPs, 39.6 M params."""
    return build_regnet('regnetx_080', MODEL_CFGS['regnetx_080'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_120(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-12GF: 12.09 GFLOPs, 46.1 M params."""
    return build_regnet('regnetx_120', MODEL_CFGS['regnetx_120'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_160(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-16GF: 15.94 GFLOPs, 54.3 M params."""
    return build_regnet('regnetx_160', MODEL_CFGS['regnetx_160'], pretrained=pretrained, **kwargs)


@register_model
def regnetx_320(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-32GF: 31.74 GFLOPs, 107.8 M params."""
    return build_regnet('regnetx_320', MODEL_CFGS['regnetx_320'], pretrained=pretrained, **kwargs)


@register_model
def regnety_002(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-200MF: 0.20 GFLOPs, 3.2 M params."""
    return build_regnet('regnety_002', MODEL_CFGS['regnety_002'], pretrained=pretrained, **kwargs)


@register_model
def regnety_004(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-400MF: 0.40 GFLOPs, 4.3 M params."""
    return build_regnet('regnety_004', MODEL_CFGS['regnety_004'], pretrained=pretrained, **kwargs)


@register_model
def regnety_006(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-600MF: 0.60 GFLOPs, 6.1 M params."""
    return build_regnet('regnety_006', MODEL_CFGS['regnety_006'], pretrained=pretrained, **kwargs)


@register_model
def regnety_008(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-800MF: 0.80 GFLOPs, 6.3 M params."""
    return build_regnet('regnety_008', MODEL_CFGS['regnety_008'], pretrained=pretrained, **kwargs)


@register_model
def regnety_008_tv(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-800MF, torchvision's width rounding: 0.83 GFLOPs, 6.4 M params."""
    return build_regnet('regnety_008_tv', MODEL_CFGS['regnety_008_tv'], pretrained=pretrained, **kwargs)


@register_model
def regnety_016(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-1.6GF: 1.61 GFLOPs, 11.2 M params."""
    return build_regnet('regnety_016', MODEL_CFGS['regnety_016'], pretrained=pretrained, **kwargs)


@register_model
def regnety_032(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-3.2GF: 3.18 GFLOPs, 19.4 M params."""
    return build_regnet('regnety_032', MODEL_CFGS['regnety_032'], pretrained=pretrained, **kwargs)


@register_model
def regnety_040(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-4.0GF: 3.97 GFLOPs, 20.6 M params."""
    return build_regnet('regnety_040', MODEL_CFGS['regnety_040'], pretrained=pretrained, **kwargs)


@register_model
def regnety_064(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-6.4GF: 6.36 GFLOPs, 30.6 M params."""
    return build_regnet('regnety_064', MODEL_CFGS['regnety_064'], pretrained=pretrained, **kwargs)


@register_model
def regnety_080(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-8.0GF: 7.96 GFLOPs, 39.2 M params."""
    return build_regnet('regnety_080', MODEL_CFGS['regnety_080'], pretrained=pretrained, **kwargs)


@register_model
def regnety_080_tv(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-8.0GF, torchvision's width rounding: 8.47 GFLOPs, 39.4 M params."""
    return build_regnet('regnety_080_tv', MODEL_CFGS['regnety_080_tv'], pretrained=pretrained, **kwargs)


@register_model
def regnety_120(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-12GF: 12.09 GFLOPs, 51.8 M params."""
    return build_regnet('regnety_120', MODEL_CFGS['regnety_120'], pretrained=pretrained, **kwargs)


@register_model
def regnety_160(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-16GF: 15.91 GFLOPs, 83.6 M params."""
    return build_regnet('regnety_160', MODEL_CFGS['regnety_160'], pretrained=pretrained, **kwargs)


@register_model
def regnety_320(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-32GF: 32.28 GFLOPs, 145.0 M params."""
    return build_regnet('regnety_320', MODEL_CFGS['regnety_320'], pretrained=pretrained, **kwargs)


@register_model
def regnety_640(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-64GF: 64.07 GFLOPs, 281.4 M params."""
    return build_regnet('regnety_640', MODEL_CFGS['regnety_640'], pretrained=pretrained, **kwargs)


@register_model
def regnety_1280(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-128GF: 127.52 GFLOPs, 644.8 M params."""
    return build_regnet('regnety_1280', MODEL_CFGS['regnety_1280'], pretrained=pretrained, **kwargs)


@register_model
def regnety_2560(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-256GF: 254.38 GFLOPs, 1282.6 M params."""
    return build_regnet('regnety_2560', MODEL_CFGS['regnety_2560'], pretrained=pretrained, **kwargs)


@register_model
def regnety_10b(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetY-10B: 1863.31 GFLOPs, 9352.2 M params."""
    return build_regnet('regnety_10b', MODEL_CFGS['regnety_10b'], pretrained=pretrained, **kwargs)


for _arch in MODEL_CFGS:
    for _alias in aliases(_arch):
        REGISTRY.register_alias(_alias, _arch)
