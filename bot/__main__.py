"""`python -m bot` runs the bot, like `nst-bot`."""

from __future__ import annotations

import sys

from bot.cli import main

if __name__ == "__main__":  # the spawned executor workers import this module too: start only once
    sys.exit(main())
