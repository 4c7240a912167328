"""``python -m regzoo.tables``: regenerate the results tables; the command is ``regzoo.cli.tables``."""
import sys

from regzoo.cli.tables import run

if __name__ == '__main__':
    sys.exit(run())
