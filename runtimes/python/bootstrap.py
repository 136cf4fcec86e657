"""Wisp's managed Python runtime.

The server starts this file as `python3 /var/runtime/bootstrap.py` inside a sandbox, with
the function's code at $LAMBDA_TASK_ROOT and the Runtime API at $AWS_LAMBDA_RUNTIME_API.
It imports the handler named by $_HANDLER once, then loops: fetch the next event, call
`handler(event, context)`, post the result or the error, in the shapes Lambda's own Python
runtime uses, so that functions written for Lambda behave the same here.

Start-up time matters (a cold start pays for every import made here), so this file uses
only the standard library and keeps imports small: it talks HTTP/1.1 over one persistent
socket itself rather than through `http.client`, which pulls in `email` and `ssl` and
roughly doubles the interpreter's start time. `traceback` and `logging` are imported only
when they are needed.

Shutdown hooks (Wisp's own, see docs/SHUTDOWN.md): the function does `import wisp` (a module
this runtime provides, no packaging needed) and `wisp.on_shutdown(fn)`. When the instance is
stopped the runtime gets SIGTERM, reads the reason (`spindown`, `timeout` or `failure`) and the
deadline from the Runtime API's `/runtime/wisp/shutdown`, calls every `fn(reason)` in order,
says `/runtime/wisp/shutdown/done` and exits 0. Without hooks it exits at once.
"""

import json
import os
import socket
import sys
import time

# The C module behind `signal`, which would also import `enum` wrappers: nothing else is needed here.
import _signal

RUNTIME_PREFIX = "/2018-06-01/runtime"
# The media type of an event a protobuf signature asks to be delivered in binary.
PROTOBUF = "application/x-protobuf"


class RuntimeApiError(Exception):
    """The Runtime API answered in a way this runtime cannot continue from."""


class RuntimeClient:
    """A minimal HTTP/1.1 client for the Runtime API over one keep-alive connection.

    The Runtime API is a plain-HTTP loopback server; requests are strictly sequential,
    so one connection is reused for the whole life of the process.
    """

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host or not port.isdigit():
            raise RuntimeApiError("AWS_LAMBDA_RUNTIME_API must be host:port, got %r" % address)
        self.host = host
        self.port = int(port)
        self.host_header = address
        self.connection = None
        self.reader = None

    def _connect(self):
        connection = socket.create_connection((self.host, self.port))
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection = connection
        self.reader = connection.makefile("rb")

    def close(self):
        if self.connection is not None:
            try:
                self.reader.close()
                self.connection.close()
            except OSError:
                pass
        self.connection = None
        self.reader = None

    def request(self, method, path, body=b"", headers=None):
        """Send one request and return (status, headers with lowercase names, body)."""
        head = ["%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, self.host_header)]
        if method != "GET" or body:
            head.append("Content-Length: %d\r\n" % len(body))
            head.append("Content-Type: application/json\r\n")
        if headers:
            for name, value in headers.items():
                head.append("%s: %s\r\n" % (name, value))
        head.append("\r\n")
        message = "".join(head).encode("latin-1") + body
        reused = self.connection is not None
        if not reused:
            self._connect()
        try:
            self.connection.sendall(message)
            return self._read_response()
        except (ConnectionError, RuntimeApiError):
            self.close()
            if not reused:
                raise
        # A keep-alive connection the server had already closed: one fresh attempt.
        self._connect()
        self.connection.sendall(message)
        return self._read_response()

    def _read_response(self):
        reader = self.reader
        status_line = reader.readline(65537)
        if not status_line:
            raise RuntimeApiError("connection closed by the Runtime API before a response")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise RuntimeApiError("malformed status line from the Runtime API: %r" % status_line)
        status = int(parts[1])
        headers = {}
        while True:
            line = reader.readline(65537)
            if not line:
                raise RuntimeApiError("connection closed by the Runtime API inside headers")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        elif "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]))
        else:
            body = reader.read()
            self.close()
            return status, headers, body
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def _read_exact(self, length):
        body = self.reader.read(length)
        if len(body) != length:
            raise RuntimeApiError("connection closed by the Runtime API inside a body")
        return body

    def _read_chunked(self):
        chunks = []
        while True:
            size_line = self.reader.readline(65537)
            if not size_line:
                raise RuntimeApiError("connection closed by the Runtime API inside a body")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.reader.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self._read_exact(size))
            self.reader.readline(65537)

    def next_invocation(self):
        status, headers, body = self.request("GET", RUNTIME_PREFIX + "/invocation/next")
        if status != 200:
            raise RuntimeApiError(
                "GET /runtime/invocation/next answered %d: %s"
                % (status, body.decode("utf-8", "replace"))
            )
        return headers, body

    def post_response(self, request_id, payload):
        self._post(RUNTIME_PREFIX + "/invocation/%s/response" % request_id, payload, None)

    def post_error(self, request_id, error, error_type):
        self._post(
            RUNTIME_PREFIX + "/invocation/%s/error" % request_id,
            _encode_error(error),
            {"Lambda-Runtime-Function-Error-Type": error_type},
        )

    def post_init_error(self, error):
        self._post(
            RUNTIME_PREFIX + "/init/error",
            _encode_error(error),
            {"Lambda-Runtime-Function-Error-Type": error["errorType"]},
        )

    def _post(self, path, body, headers):
        status, _, answer = self.request("POST", path, body, headers)
        if status >= 300:
            # The invocation may have timed out or been cancelled meanwhile; the server
            # decides what happens next, this runtime simply moves on.
            _log("Runtime API refused POST %s (%d): %s" % (path, status, answer.decode("utf-8", "replace")))


def _encode_error(error):
    return json.dumps(error, ensure_ascii=False, default=str).encode("utf-8")


def _log(message):
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class CognitoIdentity:
    """`context.identity`: the Amazon Cognito identity that made the request, if any."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, fields):
        self.cognito_identity_id = fields.get("cognitoIdentityId")
        self.cognito_identity_pool_id = fields.get("cognitoIdentityPoolId")

    def __repr__(self):
        return "CognitoIdentity(%r, %r)" % (self.cognito_identity_id, self.cognito_identity_pool_id)


class Client:
    """`context.client_context.client`: the mobile client application that made the request."""

    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")

    def __init__(self, fields):
        self.installation_id = fields.get("installation_id")
        self.app_title = fields.get("app_title")
        self.app_version_name = fields.get("app_version_name")
        self.app_version_code = fields.get("app_version_code")
        self.app_package_name = fields.get("app_package_name")


class ClientContext:
    """`context.client_context`: what the invoking client sent in X-Amz-Client-Context."""

    __slots__ = ("client", "custom", "env")

    def __init__(self, fields):
        client = fields.get("client")
        self.client = Client(client) if isinstance(client, dict) else None
        self.custom = fields.get("custom")
        self.env = fields.get("env")


class LambdaContext:
    """The `context` argument, with the attributes Lambda's Python runtime provides."""

    def __init__(self, request_id, deadline_ms, invoked_function_arn, identity, client_context):
        environment = os.environ
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = environment.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = environment.get("AWS_LAMBDA_FUNCTION_VERSION")
        # A string, as Lambda's runtime passes it through from the environment.
        self.memory_limit_in_mb = environment.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = environment.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = environment.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.identity = CognitoIdentity(identity or {})
        self.client_context = ClientContext(client_context) if client_context is not None else None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def log(self, message):
        sys.stdout.write(str(message))
        sys.stdout.flush()

    def __repr__(self):
        return (
            "LambdaContext(aws_request_id=%r, function_name=%r, function_version=%r, "
            "invoked_function_arn=%r, memory_limit_in_mb=%r)"
            % (
                self.aws_request_id,
                self.function_name,
                self.function_version,
                self.invoked_function_arn,
                self.memory_limit_in_mb,
            )
        )


class InitFailure(Exception):
    """The handler could not be loaded; carries the error body for /runtime/init/error."""

    def __init__(self, error_type, message, stack_trace=None):
        super().__init__(message)
        self.error = {"errorMessage": message, "errorType": error_type, "stackTrace": stack_trace or []}


def load_handler(handler_spec):
    """Import the module named by `_HANDLER` and return the handler function.

    `pkg/mod.fn` and `pkg.mod.fn` both name function `fn` of module `pkg.mod`.
    """
    module_path, dot, function_name = handler_spec.rpartition(".")
    if not dot or not module_path or not function_name:
        raise InitFailure(
            "Runtime.MalformedHandlerName",
            "Bad handler '%s': expected module.function" % handler_spec,
        )
    module_name = module_path.replace("/", ".")
    try:
        module = __import__(module_name, fromlist=["_"] if "." in module_name else ())
    except ImportError as error:
        raise InitFailure(
            "Runtime.ImportModuleError",
            "Unable to import module '%s': %s" % (module_name, error),
        ) from None
    except SyntaxError as error:
        raise InitFailure(
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module '%s': %s" % (module_name, error),
            ['  File "%s" Line %s\n    %s' % (error.filename, error.lineno, (error.text or "").strip())],
        ) from None
    except Exception as error:
        raise InitFailure(type(error).__name__, str(error), _stack_trace(error.__traceback__)) from None
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise InitFailure(
            "Runtime.HandlerNotFound",
            "Handler '%s' missing on module '%s'" % (function_name, module_name),
        ) from None


def _stack_trace(tb):
    """Format a traceback as Lambda does, leaving out this runtime's own frames."""
    import traceback

    this_file = os.path.abspath(__file__)
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == this_file:
        tb = tb.tb_next
    return traceback.format_list(traceback.extract_tb(tb))


def _log_error(error):
    lines = ["[ERROR] %s: %s" % (error["errorType"], error["errorMessage"])]
    if error.get("stackTrace"):
        lines.append("Traceback (most recent call last):")
        lines.extend(frame.rstrip("\n") for frame in error["stackTrace"])
    _log("\n".join(lines))


def _json_default(value):
    # Lambda's runtime serialises Decimal (what DynamoDB returns); anything else is a
    # marshalling error, reported the way Lambda reports it.
    if type(value).__name__ == "Decimal" and type(value).__module__ in ("decimal", "_decimal", "_pydecimal"):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


def _parse_json_header(headers, name):
    value = headers.get(name)
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


class _RequestIdFilter:
    """Adds the current request id to every log record, for the Lambda log format."""

    request_id = ""

    def filter(self, record):
        record.aws_request_id = _RequestIdFilter.request_id
        return True


_logging_installed = False


def _install_logging_if_used():
    """Give the root logger Lambda's handler and format, once the function uses `logging`.

    Importing `logging` costs a few milliseconds, so only functions that use it pay for it.
    """
    global _logging_installed
    if _logging_installed or "logging" not in sys.modules:
        return
    _logging_installed = True
    import logging

    class LambdaLoggerHandler(logging.StreamHandler):
        def __init__(self):
            super().__init__(sys.stdout)

    handler = LambdaLoggerHandler()
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    if level:
        root.setLevel(level.upper())


def _invoke(client, handler, headers, body):
    request_id = headers.get("lambda-runtime-aws-request-id", "")
    trace_id = headers.get("lambda-runtime-trace-id")
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    _RequestIdFilter.request_id = request_id
    try:
        deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0"))
    except ValueError:
        deadline_ms = 0
    context = LambdaContext(
        request_id,
        deadline_ms,
        headers.get("lambda-runtime-invoked-function-arn"),
        _parse_json_header(headers, "lambda-runtime-cognito-identity"),
        _parse_json_header(headers, "lambda-runtime-client-context"),
    )
    try:
        if headers.get("content-type", "").startswith(PROTOBUF):
            # The signature asks for binary protobuf: the handler gets the bytes as they are.
            event = body
        else:
            event = json.loads(body) if body.strip() else {}
    except ValueError as error:
        error = {
            "errorMessage": "Unable to unmarshal input: %s" % error,
            "errorType": "Runtime.UnmarshalError",
            "requestId": request_id,
            "stackTrace": [],
        }
        _log_error(error)
        client.post_error(request_id, error, "Runtime.UnmarshalError")
        return

    try:
        result = handler(event, context)
    except Exception as error:
        error_body = {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "requestId": request_id,
            "stackTrace": _stack_trace(error.__traceback__),
        }
        _log_error(error_body)
        client.post_error(request_id, error_body, "Unhandled")
        return

    if isinstance(result, (bytes, bytearray, memoryview)):
        # Bytes go out as they are (a binary protobuf result), as in Lambda's own runtime.
        client.post_response(request_id, bytes(result))
        return
    try:
        payload = json.dumps(result, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, OverflowError) as error:
        error_body = {
            "errorMessage": "Unable to marshal response: %s" % error,
            "errorType": "Runtime.MarshalError",
            "requestId": request_id,
            "stackTrace": [],
        }
        _log_error(error_body)
        client.post_error(request_id, error_body, "Runtime.MarshalError")
        return
    client.post_response(request_id, payload.encode("utf-8"))


def _routed_handler(client, routed, default, headers):
    """The handler a routed event goes to (`Wisp-Handler`), imported on first use; None when it
    cannot be loaded (the invocation has then failed with the reason)."""
    spec = headers.get("wisp-handler")
    if not spec:
        return default
    if spec not in routed:
        try:
            routed[spec] = load_handler(spec)
        except InitFailure as failure:
            request_id = headers.get("lambda-runtime-aws-request-id", "")
            error = dict(failure.error, requestId=request_id)
            _log_error(error)
            client.post_error(request_id, error, error["errorType"])
            return None
    return routed[spec]


_shutdown_hooks = []
_wisp_module = None


def _make_wisp_module():
    """The `wisp` module functions import: shutdown hooks, without packaging anything."""
    module = type(sys)("wisp")
    module.__doc__ = "Wisp's runtime helpers: shutdown hooks (see docs/SHUTDOWN.md)."

    def on_shutdown(hook):
        """Register `hook(reason)` to run when this instance is stopped; returns `hook`, so it also
        works as a decorator. `reason` is "spindown", "timeout" or "failure"."""
        if not callable(hook):
            raise TypeError("wisp.on_shutdown expects a callable, got %r" % (hook,))
        _shutdown_hooks.append(hook)
        return hook

    def remaining_shutdown_time_in_millis():
        """While hooks run: milliseconds left before the runtime is killed (None otherwise)."""
        deadline = module.shutdown_deadline_ms
        return None if deadline is None else max(0, int(deadline - time.time() * 1000))

    module.on_shutdown = on_shutdown
    module.remaining_shutdown_time_in_millis = remaining_shutdown_time_in_millis
    module.shutdown_deadline_ms = None
    global _wisp_module
    _wisp_module = module
    return module


def _run_shutdown_hooks(address):
    """Ask for the shutdown notice, call every hook with its reason, and say when they are done."""
    # A connection of its own: the runtime's one may be in the middle of a request.
    client = RuntimeClient(address)
    reason, deadline_ms, request_id = "spindown", None, ""
    try:
        status, _, body = client.request("POST", RUNTIME_PREFIX + "/wisp/shutdown")
        if status == 200:
            notice = json.loads(body)
            reason = notice.get("reason", reason)
            deadline_ms = notice.get("deadlineMs")
            request_id = notice.get("requestId", "")
        else:
            _log("Runtime API refused POST /runtime/wisp/shutdown (%d): %s" % (status, body.decode("utf-8", "replace")))
    except (RuntimeApiError, OSError, ValueError) as error:
        _log("bootstrap: cannot read the shutdown notice: %s" % error)
    _wisp_module.shutdown_deadline_ms = deadline_ms
    _RequestIdFilter.request_id = request_id
    _install_logging_if_used()
    failed_type = None
    for hook in list(_shutdown_hooks):
        try:
            hook(reason)
        except Exception as error:
            _log_error(
                {
                    "errorMessage": str(error),
                    "errorType": type(error).__name__,
                    "requestId": request_id,
                    "stackTrace": _stack_trace(error.__traceback__),
                }
            )
            failed_type = failed_type or type(error).__name__
    done = json.dumps({"errorType": failed_type}).encode("utf-8") if failed_type else b""
    try:
        client.request("POST", RUNTIME_PREFIX + "/wisp/shutdown/done", done)
    except (RuntimeApiError, OSError):
        pass


def _install_shutdown_handler(address):
    """On SIGTERM run the hooks, then exit 0. As pid 1 of its sandbox this process sees SIGTERM
    only because the handler exists; it runs in the main thread, between two bytecodes of whatever
    was running (a wait for the next invocation, or a handler that timed out)."""

    def on_sigterm(signum, frame):
        _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
        try:
            if _shutdown_hooks:
                _run_shutdown_hooks(address)
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(0)

    _signal.signal(_signal.SIGTERM, on_sigterm)


def main():
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        sys.stderr.write("bootstrap: AWS_LAMBDA_RUNTIME_API is not set\n")
        return 1
    client = RuntimeClient(address)
    sys.modules["wisp"] = _make_wisp_module()
    _install_shutdown_handler(address)

    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    runtime_dir = os.path.dirname(os.path.abspath(__file__))
    # Lambda's order: function code first, then layers, then the runtime itself.
    if sys.path and os.path.abspath(sys.path[0] or ".") == runtime_dir:
        del sys.path[0]
    version = "python%d.%d" % sys.version_info[:2]
    sys.path[0:0] = [task_root, "/opt/python/lib/%s/site-packages" % version, "/opt/python"]
    sys.path.append(runtime_dir)

    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except InitFailure as failure:
        _log_error(failure.error)
        client.post_init_error(failure.error)
        return 1
    _install_logging_if_used()

    routed = {}
    try:
        while True:
            headers, body = client.next_invocation()
            _install_logging_if_used()
            chosen = _routed_handler(client, routed, handler, headers)
            if chosen is not None:
                _invoke(client, chosen, headers, body)
    except (RuntimeApiError, OSError) as error:
        # The server ended this instance (or went away): nothing is left to serve.
        sys.stderr.write("bootstrap: %s\n" % error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
