"""``python -m skflow``: the same as the ``skflow`` command."""

import sys

from .cli import main

sys.exit(main())
