"""Writes to /tmp until the filesystem refuses, then reports the errno it got."""

import errno
import os


def handler(event, context):
    event = event if isinstance(event, dict) else {}
    limit_mb = int(event.get("max_mb", 4096))
    path = os.path.join(event.get("dir", "/tmp"), "fill")
    chunk = b"\xa5" * (1 << 20)
    written_mb = 0
    error_name = None
    try:
        with open(path, "wb") as file:
            while written_mb < limit_mb:
                file.write(chunk)
                file.flush()
                written_mb += 1
            os.fsync(file.fileno())
    except OSError as error:
        error_name = errno.errorcode.get(error.errno, str(error.errno))
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return {"errno": error_name, "written_mb": written_mb}
