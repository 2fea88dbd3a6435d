"""Child servers that die with the process that started them.

A test run killed outright (SIGKILL from a CI timeout or an impatient user) runs no fixture
teardown, so the servers its fixtures started (Prometheus, moto, the daemons under test) would
live on, holding their ports and data directories. `die_with_parent(command)` returns the
command prefixed so that, on Linux, the child asks the kernel to send it SIGKILL when its parent
dies (`prctl(PR_SET_PDEATHSIG)`) and then execs the command: the same PID, no process in
between, nothing left to reap.

The child makes the request itself, after the fork, by running this file as a script (`-I -S`:
the standard library only, about 20 ms); a `preexec_fn` would do it between fork and exec,
which is unsafe in a process with threads. A parent that died before the request was made is
seen by the child (its parent is no longer the one named) and the command never starts.

The kernel's "parent" is the thread that forked: a child started from a thread other than the
main one would die when that thread ends, so such commands are returned untied, as are commands
on other systems and commands whose program cannot be found (so that `Popen` raises as before).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(command: Sequence[str]) -> list[str]:
    """`command`, run so that its process is killed when this process ends (see the module
    docstring for when it is returned unchanged)."""
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
        or not command
        or shutil.which(command[0]) is None
    ):
        return list(command)
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), *command]


def _exec_tied(parent_pid: int, command: Sequence[str]) -> None:
    """Ask for SIGKILL at the parent's death, check the parent is still `parent_pid`, exec."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        sys.stderr.write(f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}; not tied\n")
    elif os.getppid() != parent_pid:  # the parent died before the request was made
        os._exit(1)
    os.execvp(command[0], list(command))


if __name__ == "__main__":
    _exec_tied(int(sys.argv[1]), sys.argv[2:])
