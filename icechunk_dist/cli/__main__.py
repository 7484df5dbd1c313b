"""``python -m icechunk_dist.cli``."""

import sys

from icechunk_dist.cli._main import main

sys.exit(main())
