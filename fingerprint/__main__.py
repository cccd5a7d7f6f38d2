"""``python -m fingerprint``: the engine's offline command line (see fingerprint.cli)."""

import sys

from fingerprint.cli import main

sys.exit(main())
