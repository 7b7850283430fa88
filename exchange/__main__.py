"""``python -m exchange``: the same as the ``exchange`` command."""

import sys

from exchange.cli import main

if __name__ == "__main__":
    sys.exit(main())
