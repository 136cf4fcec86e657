"""Tries to reach a host path (the server's data directory) from inside the sandbox."""

import os


def handler(event, context):
    path = event["path"]
    result = {"path": path, "exists": os.path.exists(path), "listed": False, "read": False, "entries": []}
    try:
        result["entries"] = sorted(os.listdir(path))[:50]
        result["listed"] = True
    except OSError as error:
        result["list_error"] = error.strerror
    for name in event.get("files", ["credentials"]):
        try:
            with open(os.path.join(path, name), "rb") as file:
                file.read(64)
            result["read"] = True
        except OSError as error:
            result.setdefault("read_errors", {})[name] = error.strerror
    return result
