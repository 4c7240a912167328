"""``python -m regzoo.train``: train a RegNet; the command is ``regzoo.cli.train``."""
import sys

from regzoo.cli.train import run

if __name__ == '__main__':
    sys.exit(run())
