"""`python -m nst_core`: the same as the `nst` command."""

import sys

from nst_core.cli import main

sys.exit(main())
