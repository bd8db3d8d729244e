"""The watchdog of one step's container: it goes when the worker that started it dies.

The Docker sandbox starts one per container, in a session of its own (a kill of the
worker's process group does not reach it), run by the worker's interpreter in
isolated mode: ``python -I watchdog.py CONTAINER_ID``. Its standard input is a pipe
only the worker holds. When the sandbox closes normally it writes ``done`` and the
watchdog exits; when the pipe reads end-of-file first, the worker is gone however it
died (SIGKILL, the OOM killer), and the watchdog removes the container: the kernel
then kills every process in it, however it detached, since they all live in the
container's PID namespace.

It imports nothing but the standard library until it has to act, so it costs a few
megabytes while it waits.
"""

from __future__ import annotations

import os
import signal
import sys

DONE = b"done"


def main(args: list[str]) -> int:
    """Wait on the lifeline; remove the container unless told ``done``."""
    if len(args) != 1:
        print("usage: watchdog.py CONTAINER_ID", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGHUP):  # a terminal's signals are not for it
        signal.signal(signum, signal.SIG_IGN)
    received = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except OSError:
            chunk = b""
        if not chunk:
            break
        received += chunk
        if DONE in received:
            return 0
    return _remove(args[0])


def _remove(container_id: str) -> int:
    import docker  # noqa: PLC0415  (only when it must act)
    import docker.errors  # noqa: PLC0415

    try:
        docker.from_env().api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        return 0
    except docker.errors.DockerException as exc:
        print(f"could not remove container {container_id[:12]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
