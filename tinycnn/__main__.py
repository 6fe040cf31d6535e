"""``python -m tinycnn``: the same command line as the ``tinycnn`` script."""

import sys

from tinycnn.cli import main

sys.exit(main())
