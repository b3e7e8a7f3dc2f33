"""Allow ``python -m suimseg``."""

import sys

from suimseg.app.cli import main

sys.exit(main())
