"""``python -m hf_soups``: the ``hf-soups`` command without the entry point on ``PATH``."""

import sys

from hf_soups.cli import main

if __name__ == "__main__":
    sys.exit(main())
