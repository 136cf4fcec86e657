"""Prints log lines, to stdout and stderr, for the Tail log and `wisp logs` tests."""

import sys


def handler(event, context):
    event = event if isinstance(event, dict) else {}
    marker = event.get("marker", "marker")
    count = int(event.get("lines", 3))
    for number in range(1, count + 1):
        print("log line %d %s" % (number, marker))
    sys.stderr.write("stderr line %s\n" % marker)
    sys.stderr.flush()
    return {"printed": count}
