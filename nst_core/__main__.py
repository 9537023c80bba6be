"""`python -m nst_core`: the `nst` command of the engine alone (local runs; `--broker` needs the installed `nst`)."""

import sys

from nst_core.cli import main

sys.exit(main())
