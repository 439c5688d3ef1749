"""``python -m vislearn.train RECIPE ...``: train any recipe (the same as ``vislearn train``)."""

import sys

from vislearn.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main())
