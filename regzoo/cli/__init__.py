"""regzoo's command lines: each module here parses flags, calls library functions and prints; nothing else.

    python -m regzoo                 main.py       the zoo table and a live run of a few models
    python -m regzoo.train           train.py      training (also the root ``train.py``; DDP under torchrun)
    python -m regzoo.validate        validate.py   ImageNet-style evaluation (also the root ``validate.py``)
    python -m regzoo.cli.predict     predict.py    top-k labels per image
    python -m regzoo.export          export.py     TorchScript / torch.export / ONNX (+ int8 QDQ) with a parity check
    python -m regzoo.benchmark       benchmark.py  timm vs regzoo vs the fast path, one process
    python -m regzoo.tables          tables.py     results/models.{csv,md} and the accuracy plot

Every command also runs as ``python -m regzoo.cli.NAME`` and, once installed, as the console script
``regzoo-NAME``. The short ``python -m regzoo.NAME`` forms are two-line aliases in the package root; predict has
none because ``regzoo.predict`` is the library function. Each module's ``run(argv)`` is its exit code (what the
aliases and console scripts call). This is the top layer: library code never imports it
(``tests/test_layers.py``).
"""


def add_engine_arguments(group) -> None:
    """The flags validate and predict share for their --fast/--int8 model: calibration size and engine."""
    from regzoo.deploy.engines_choice import ENGINE_CHOICES
    group.add_argument('--calibration-images', type=int, default=None, metavar='N',
                       help='--int8: calibrate on at most N images (default: 256)')
    group.add_argument('--engine', default=None, choices=ENGINE_CHOICES,
                       help="what runs the --fast/--int8 model (regzoo.optimize_for_inference / regzoo.quantize "
                            "engine=): torch (default), onnxruntime, openvino, or auto (the fastest, measured)")
