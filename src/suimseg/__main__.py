"""Allow ``python -m suimseg``."""

import sys

from suimseg.cli import main

sys.exit(main())
