"""`python -m fioca`."""

import sys

from fioca.cli import main

sys.exit(main())
