"""``python -m regzoo.validate``: validate weights on an ImageNet-style folder; the command is ``regzoo.cli.validate``."""
import sys

from regzoo.cli.validate import run

if __name__ == '__main__':
    sys.exit(run())
