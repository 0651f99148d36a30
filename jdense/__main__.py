"""``python -m jdense train ...``: the same as the ``jdense`` console script."""

import sys

from jdense.cli import main

sys.exit(main())
