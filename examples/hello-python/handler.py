"""The first function to deploy on Wisp: greets whoever the event names."""

import os


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    greeting = os.environ.get("GREETING", "Hello")
    return {
        "message": f"{greeting}, {name}!",
        "request_id": context.aws_request_id,
        "function": context.function_name,
    }
