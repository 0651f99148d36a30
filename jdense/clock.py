"""When this program started, for ``jdense train``'s "total" time; the package imports it first.

The kernel's start time of the process is the shell's when a shell runs ``jdense train`` as its
last command (it execs it in its own process); the CPU time spent before this import is the
interpreter's own start, so ``STARTED`` is close to when Python began.
"""

import time

STARTED = time.perf_counter() - time.process_time()
