"""``python -m vislearn ...``: the same as the ``vislearn`` command (see ``vislearn.course.cli``)."""

import sys

from vislearn.course.cli import main

if __name__ == "__main__":
    sys.exit(main())
