"""``python -m vislearn ...``: the same as the ``vislearn`` command (see ``vislearn.cli``)."""

import sys

from vislearn.cli import main

if __name__ == "__main__":
    sys.exit(main())
