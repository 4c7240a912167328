"""The main job: ``python -m regzoo`` prints the zoo and runs models on a sample of generated images.

Works offline on a fresh machine. Weights are used when they are already present (HF cache, or
``--checkpoint``); otherwise the models run with random init and say so. Each run also moves the
weights into timm's model of the same name and reports max |logit difference|, the project's
compatibility promise checked live.
"""
from __future__ import annotations

import argparse
import os

import torch
from PIL import Image

DEMO_ARCHS = 'regnetx_002,regnety_002,regnetx_004_tv,regnety_032'


# (header, align) per column of the zoo table: '<' left, '>' right
ZOO_COLUMNS = (('arch', '<'), ('params(M)', '>'), ('GFLOPs', '>'), ('acts(M)', '>'), ('widths', '<'),
               ('depths', '<'), ('weights', '>'), ('default weight', '<'), ('top-1', '>'))


def aligned(rows: list[list[str]], columns=ZOO_COLUMNS, gap: int = 2) -> list[str]:
    """Rows of cells as lines, each column as wide as its widest cell and ``gap`` spaces between columns (widths
    from the content: regnety_10b's 9352.22 M params must not run into its GFLOPs)."""
    table = [[head for head, _ in columns], *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return [(' ' * gap).join(f'{cell:{align}{width}}' for cell, (_, align), width in zip(row, columns, widths))
            .rstrip() for row in table]


def zoo_table() -> str:
    """One line per architecture: size, analytic complexity, weights and the default weight's published top-1."""
    import regzoo
    rows = []
    for arch in regzoo.list_models():
        cx = regzoo.complexity(arch)
        stages = regzoo.make_stages(regzoo.MODEL_CFGS[arch])
        tags = regzoo.list_pretrained(f'{arch}.*')
        default = regzoo.get_pretrained_cfg(arch).tag if tags else None  # the weight entry marked default
        top1 = regzoo.get_pretrained_cfg(arch).top1 if default else None
        rows.append([arch, f'{cx["params"] / 1e6:.2f}', f'{cx["flops"] / 1e9:.3f}', f'{cx["acts"] / 1e6:.2f}',
                     ','.join(str(s.width) for s in stages), ','.join(str(s.depth) for s in stages), str(len(tags)),
                     f'{arch}.{default}' if default else '-', f'{top1:.2f}' if top1 is not None else '-'])
    return '\n'.join(aligned(rows))


def build(arch: str, checkpoint: str | None) -> tuple[torch.nn.Module, str]:
    """The model with real weights when they are here (checkpoint, or the default weight's cache), else random."""
    import regzoo
    from regzoo.zoo.fetch import WeightsUnavailableError
    if checkpoint:
        return regzoo.create_model(arch, checkpoint_path=checkpoint), f'weights from {checkpoint}'
    name = regzoo.get_pretrained_cfg(arch).name  # arch.default_tag
    try:
        return regzoo.create_model(name, pretrained=True), f'pretrained {name}'
    except WeightsUnavailableError:
        # named with its tag, the model carries that weight's eval transform even without its weights
        return regzoo.create_model(name), 'random init (no weights cached; see README "Pretrained weights")'


def timm_parity(model: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor) -> float:
    """Max |logit difference| between our model and timm's model of the same name holding the same weights."""
    import timm
    ref = timm.create_model(model.arch, num_classes=model.num_classes, in_chans=model.in_chans).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        return (ref(x) - logits).abs().max().item()


def run_demo(archs: list[str], images: list[Image.Image], checkpoint: str | None) -> None:
    import regzoo
    from regzoo.utils.timing import Stopwatch
    for arch in archs:
        model, weights = build(arch, checkpoint)
        model.eval()
        data_cfg = regzoo.resolve_data_config(model=model)
        transform = regzoo.create_transform(data_cfg)
        x = torch.stack([transform(img) for img in images])
        with torch.no_grad(), Stopwatch() as watch:
            logits = model(x)
        elapsed = watch.seconds
        top1 = logits.argmax(-1).tolist()
        print(f'\n{arch}: {weights}')
        print(f'  eval transform: {data_cfg.input_size[1]}px, crop_pct {data_cfg.crop_pct}, {data_cfg.interpolation}')
        print(f'  {len(images)} images in {elapsed * 1e3:.0f} ms ({len(images) / elapsed:.1f} img/s); '
              f'top-1 class per image: {top1}')
        print(f'  max |logit - timm logit| with the same weights: {timm_parity(model, x, logits):.2e}')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m regzoo', description=__doc__.splitlines()[0])
    parser.add_argument('--models', default=DEMO_ARCHS, help='comma-separated archs to run (default: %(default)s)')
    parser.add_argument('--checkpoint', help='weights file or directory to load into every model run')
    parser.add_argument('--num-images', type=int, default=8)
    parser.add_argument('--online', action='store_true', help='allow downloading weights (default: cache only)')
    args = parser.parse_args(argv)
    if not args.online:
        os.environ.setdefault('HF_HUB_OFFLINE', '1')

    import regzoo
    print(f'regzoo {regzoo.__version__}: {len(regzoo.list_models())} architectures, '
          f'{len(regzoo.list_pretrained())} pretrained weights (digits = GFLOPs x 10, analytic complexity at 224px)\n')
    print(zoo_table())
    from regzoo.data.synthetic import synthetic_images
    run_demo(args.models.split(','), synthetic_images(args.num_images, size=256)[0], args.checkpoint)
    print('\nValidate real weights on ImageNet: python validate.py --data-dir DIR --model NAME --pretrained '
          '(README "Reproducing the ImageNet numbers")')


def run(argv: list[str] | None = None) -> int:
    """The command (``python -m regzoo``): ``main``, exit code 0."""
    main(argv)
    return 0


if __name__ == '__main__':
    raise SystemExit(run())
