"""Forks until the sandbox refuses, then reports how many processes it made.

Each child sleeps briefly and exits, so the bomb winds down on its own. `max` bounds the
attempt so that a machine without a pids limit is not brought down by the test itself.
"""

import errno
import os
import time


def handler(event, context):
    event = event if isinstance(event, dict) else {}
    limit = int(event.get("max", 4000))
    child_seconds = float(event.get("child_seconds", 5))
    forked = 0
    error_name = None
    while forked < limit:
        try:
            pid = os.fork()
        except OSError as error:
            error_name = errno.errorcode.get(error.errno, str(error.errno))
            break
        if pid == 0:
            time.sleep(child_seconds)
            os._exit(0)
        forked += 1
    reaped = 0
    deadline = time.time() + child_seconds + 5
    while reaped < forked and time.time() < deadline:
        try:
            os.waitpid(-1, 0)
            reaped += 1
        except ChildProcessError:
            break
    return {"forked": forked, "error": error_name, "reaped": reaped}
