"""`python -m ovdet ...` = `ovdet ...`."""

import sys

from .cli import main

sys.exit(main())
