"""Exits while being imported, before the runtime is ready: Runtime.InitError."""

import sys

sys.exit(1)


def handler(event, context):
    return "unreachable"
