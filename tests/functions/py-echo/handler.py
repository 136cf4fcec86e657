"""Echoes its event with what the runtime told it: context fields and environment."""

import os
import sys
import time

ENVIRONMENT_NAMES = (
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "TZ",
    "LANG",
    "PATH",
    "GREETING",
    "VERSION_TAG",
)

# Tells instances apart (pids do not: each sandbox has its own pid namespace) and counts
# the invocations each one served, so tests can tell warm starts from cold ones.
INSTANCE_ID = os.urandom(8).hex()
invocations_in_this_process = 0


def handler(event, context):
    global invocations_in_this_process
    invocations_in_this_process += 1
    if isinstance(event, dict) and event.get("sleep"):
        time.sleep(float(event["sleep"]))
    client_context = context.client_context
    return {
        "event": event,
        "context": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "client_context_custom": client_context.custom if client_context else None,
            "cognito_identity_id": context.identity.cognito_identity_id if context.identity else None,
        },
        "env": {name: os.environ.get(name) for name in ENVIRONMENT_NAMES},
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "instance": INSTANCE_ID,
        "python": sys.executable,
        "invocations_in_this_process": invocations_in_this_process,
    }
