"""The registered RegNet architectures as data: arch name -> RegNetCfg, and each arch's other names.

Naming: ``regnet{x,y}_NNN`` where NNN = GFLOPs x 10 (``regnety_032`` is RegNetY-3.2GF).
The (w0, wa, wm, depth, group_size) points are the paper's / pycls's published ones.
``_tv`` rows use torchvision's width rounding (``group_min_ratio=0.9``), which changes the network
for these three sizes; ``regnety_640/1280/2560`` and ``regnety_10b`` are the SEER sizes. ``regnety_10b`` is named
by its parameters, as SEER names it (RegNetY-10B: 9.35 B parameters, 1863 GFLOPs), not by GFLOPs x 10. The
factories that build them are ``regzoo.zoo.factories``.
"""
from __future__ import annotations

from types import MappingProxyType

from regzoo.models.design import RegNetCfg

_X = dict()
_Y = dict(se_ratio=0.25)
_TV = dict(group_min_ratio=0.9)

MODEL_CFGS: MappingProxyType[str, RegNetCfg] = MappingProxyType(dict(
    regnetx_002=RegNetCfg(w0=24, wa=36.44, wm=2.49, group_size=8, depth=13, **_X),
    regnetx_004=RegNetCfg(w0=24, wa=24.48, wm=2.54, group_size=16, depth=22, **_X),
    regnetx_004_tv=RegNetCfg(w0=24, wa=24.48, wm=2.54, group_size=16, depth=22, **_X, **_TV),
    regnetx_006=RegNetCfg(w0=48, wa=36.97, wm=2.24, group_size=24, depth=16, **_X),
    regnetx_008=RegNetCfg(w0=56, wa=35.73, wm=2.28, group_size=16, depth=16, **_X),
    regnetx_016=RegNetCfg(w0=80, wa=34.01, wm=2.25, group_size=24, depth=18, **_X),
    regnetx_032=RegNetCfg(w0=88, wa=26.31, wm=2.25, group_size=48, depth=25, **_X),
    regnetx_040=RegNetCfg(w0=96, wa=38.65, wm=2.43, group_size=40, depth=23, **_X),
    regnetx_064=RegNetCfg(w0=184, wa=60.83, wm=2.07, group_size=56, depth=17, **_X),
    regnetx_080=RegNetCfg(w0=80, wa=49.56, wm=2.88, group_size=120, depth=23, **_X),
    regnetx_120=RegNetCfg(w0=168, wa=73.36, wm=2.37, group_size=112, depth=19, **_X),
    regnetx_160=RegNetCfg(w0=216, wa=55.59, wm=2.1, group_size=128, depth=22, **_X),
    regnetx_320=RegNetCfg(w0=320, wa=69.86, wm=2.0, group_size=168, depth=23, **_X),
    regnety_002=RegNetCfg(w0=24, wa=36.44, wm=2.49, group_size=8, depth=13, **_Y),
    regnety_004=RegNetCfg(w0=48, wa=27.89, wm=2.09, group_size=8, depth=16, **_Y),
    regnety_006=RegNetCfg(w0=48, wa=32.54, wm=2.32, group_size=16, depth=15, **_Y),
    regnety_008=RegNetCfg(w0=56, wa=38.84, wm=2.4, group_size=16, depth=14, **_Y),
    regnety_008_tv=RegNetCfg(w0=56, wa=38.84, wm=2.4, group_size=16, depth=14, **_Y, **_TV),
    regnety_016=RegNetCfg(w0=48, wa=20.71, wm=2.65, group_size=24, depth=27, **_Y),
    regnety_032=RegNetCfg(w0=80, wa=42.63, wm=2.66, group_size=24, depth=21, **_Y),
    regnety_040=RegNetCfg(w0=96, wa=31.41, wm=2.24, group_size=64, depth=22, **_Y),
    regnety_064=RegNetCfg(w0=112, wa=33.22, wm=2.27, group_size=72, depth=25, **_Y),
    regnety_080=RegNetCfg(w0=192, wa=76.82, wm=2.19, group_size=56, depth=17, **_Y),
    regnety_080_tv=RegNetCfg(w0=192, wa=76.82, wm=2.19, group_size=56, depth=17, **_Y, **_TV),
    regnety_120=RegNetCfg(w0=168, wa=73.36, wm=2.37, group_size=112, depth=19, **_Y),
    regnety_160=RegNetCfg(w0=200, wa=106.23, wm=2.48, group_size=112, depth=18, **_Y),
    regnety_320=RegNetCfg(w0=232, wa=115.89, wm=2.53, group_size=232, depth=20, **_Y),
    regnety_640=RegNetCfg(w0=352, wa=147.48, wm=2.4, group_size=328, depth=20, **_Y),
    regnety_1280=RegNetCfg(w0=456, wa=160.83, wm=2.52, group_size=264, depth=27, **_Y),
    regnety_2560=RegNetCfg(w0=640, wa=230.83, wm=2.53, group_size=373, depth=27, **_Y),
    # vissl's regnet10B (w_0 1744, w_a 620.83, w_m 2.52, depth 27, group_width 1010, bottleneck 1): stages of
    # widths 2020/4040/11110/28280 and depths 2/7/17/1, transformers' convert_regnet_seer_10b_to_pytorch.py config
    regnety_10b=RegNetCfg(w0=1744, wa=620.83, wm=2.52, group_size=1010, depth=27, **_Y),
))


def paper_name(arch: str) -> str:
    """'regnety_032' -> 'RegNetY-3.2GF', 'regnetx_004' -> 'RegNetX-400MF' (pycls naming); 'regnety_10b' -> 'RegNetY-10B'
    (SEER's naming by parameters)."""
    family, size = arch[len('regnet')].upper(), arch.split('_')[1]
    if size.endswith('b'):
        return f'RegNet{family}-{size[:-1]}B'
    digits = int(size)
    if digits < 10:
        return f'RegNet{family}-{digits * 100}MF'
    return f'RegNet{family}-{digits / 10:.1f}GF' if digits < 100 else f'RegNet{family}-{digits // 10}GF'


def torchvision_name(arch: str) -> str:
    """'regnety_032' -> 'regnet_y_3_2gf' (torchvision naming)."""
    family, digits = arch[len('regnet')], int(arch.split('_')[1])
    size = f'{digits * 100}mf' if digits < 10 else f'{digits / 10:g}gf'.replace('.', '_')
    return f'regnet_{family}_{size}'


# the sizes torchvision ships; its rounding differs for X-400MF, Y-800MF and Y-8GF, whose names map to _tv
TORCHVISION_SIZES = ('004', '008', '016', '032', '080', '160', '320', '1280')


def aliases(arch: str) -> tuple[str, ...]:
    """The other names of ``arch``: the paper's ('RegNetY-3.2GF') and torchvision's ('regnet_y_3_2gf')."""
    base = arch.removesuffix('_tv')
    names = () if arch.endswith('_tv') else (paper_name(arch),)
    if base.split('_')[1] in TORCHVISION_SIZES and (arch.endswith('_tv') or f'{arch}_tv' not in MODEL_CFGS):
        names += (torchvision_name(base),)
    return names
