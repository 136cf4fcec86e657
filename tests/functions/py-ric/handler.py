"""A function run by AWS's own runtime interface client (awslambdaric) as a provided runtime."""

import os


def handler(event, context):
    if isinstance(event, dict) and event.get("fail"):
        raise RuntimeError(event["fail"])
    return {
        "echo": event,
        "runtime": "awslambdaric",
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "task_root": os.environ.get("LAMBDA_TASK_ROOT"),
    }
