"""``python -m skmtl``: the command line, as the ``skmtl`` command (``--help``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
