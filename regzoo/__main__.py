"""``python -m regzoo``: the main job, ``regzoo.cli.main``."""
from regzoo.cli.main import run

if __name__ == '__main__':
    raise SystemExit(run())
