"""``python -m zerolab.client``: the same as ``zerolab-app``."""

import sys

from .cli import main

sys.exit(main())
