"""``python -m certstorm``: the same command line as ``certstorm``."""

import sys

from certstorm.cli import main

sys.exit(main())
