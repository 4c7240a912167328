"""``python -m regzoo.benchmark``: timm vs regzoo vs the fast path; the command is ``regzoo.cli.benchmark``."""
import sys

from regzoo.cli.benchmark import run

if __name__ == '__main__':
    sys.exit(run())
