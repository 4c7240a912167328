"""``python -m regzoo.export``: export a model to TorchScript, torch.export or ONNX; the command is ``regzoo.cli.export``."""
import sys

from regzoo.cli.export import run

if __name__ == '__main__':
    sys.exit(run())
