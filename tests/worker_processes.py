"""Worker processes for the multi-process tests: a free loopback port, and a bounded wait that always kills."""

import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, env, log):
    """``python args...`` in its own process group, its output to ``log``."""
    return subprocess.Popen([sys.executable, *map(str, args)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait(procs, logs, what: str, timeout: float):
    """``(exit codes, their logs' tails)`` once all exit, one fails, or ``timeout`` s pass; the rest are killed."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one failed: the others would wait for it until their own timeout
            time.sleep(0.2)
        codes = [p.poll() for p in procs]
    finally:
        for p in procs:  # always: kill each worker's process group, then reap it
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    text = []
    for i, log in enumerate(logs):
        log.seek(0)
        text.append(f"--- {what} {i} (exit {codes[i]}) ---\n{log.read()[-3000:]}")
        log.close()
    return codes, "\n".join(text)
