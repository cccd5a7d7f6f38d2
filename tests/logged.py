"""Child processes whose output goes to a file, never to a pipe.

A pipe that nobody reads while the test waits fills up (64 KiB on Linux);
the child's next write to stdout or stderr then blocks, and with it every
thread that logs. A worker cut off from a restarting broker logs thousands
of reconnect errors in a second, so a pipe froze it: no consumption, no
watchdog, nothing until the test read the pipe at shutdown.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence


class LoggedProcess(subprocess.Popen[bytes]):
    """A child with stdout and stderr in an unnamed temporary file; ``output()`` reads it."""

    def __init__(self, args: Sequence[str], env: dict[str, str]) -> None:
        self.log = tempfile.TemporaryFile()
        super().__init__(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        """Everything the child wrote so far."""
        return os.pread(self.log.fileno(), os.fstat(self.log.fileno()).st_size, 0).decode(errors="replace")
