"""``python -m monitor``: the same as the ``castwatch`` command."""

import sys

from monitor.cli import main

sys.exit(main())
