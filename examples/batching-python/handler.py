"""Batching across invocations: rows are buffered in memory and written to PostgreSQL in batches.

Each invocation adds one row (`{"batch": "...", "seq": N}`) to the instance's buffer. When the
buffer holds `BATCH_SIZE` rows it is written in one statement; whatever is left when the instance
is stopped (scale-in, redeploy, server stop, a timeout) is written by the shutdown hook, so no row
is lost while most invocations never touch the database. See docs/SHUTDOWN.md.

Needs `pg8000` next to this file (`pip install --target . pg8000`), `wisp serve
--function-network egress`, and the table:

    CREATE TABLE rows (batch text NOT NULL, seq integer NOT NULL, PRIMARY KEY (batch, seq));
"""

import os

import pg8000.native
import wisp

TABLE = os.environ.get("BATCH_TABLE", "rows")
BATCH_SIZE = int(os.environ.get("BATCH_SIZE", "100"))

buffer = []
connection = None


def flush():
    """Write every buffered row in one INSERT; the buffer is emptied only once they are stored."""
    global connection
    if not buffer:
        return 0
    if connection is None:
        host = os.environ.get("DATABASE_HOST") or os.environ["WISP_HOST_ADDRESS"]
        connection = pg8000.native.Connection(
            os.environ.get("DATABASE_USER", "postgres"),
            host=host,
            port=int(os.environ.get("DATABASE_PORT", "5432")),
            database=os.environ.get("DATABASE_NAME", "postgres"),
            password=os.environ.get("DATABASE_PASSWORD"),
        )
    values = ", ".join("(:batch%d, :seq%d)" % (index, index) for index in range(len(buffer)))
    parameters = {}
    for index, (batch, seq) in enumerate(buffer):
        parameters["batch%d" % index] = batch
        parameters["seq%d" % index] = seq
    connection.run(
        "INSERT INTO %s (batch, seq) VALUES %s ON CONFLICT DO NOTHING" % (TABLE, values),
        **parameters,
    )
    written = len(buffer)
    buffer.clear()
    return written


@wisp.on_shutdown
def flush_on_shutdown(reason):
    written = flush()
    print("flushed %d rows on shutdown (%s)" % (written, reason))


def handler(event, context):
    buffer.append((str(event["batch"]), int(event["seq"])))
    written = flush() if len(buffer) >= BATCH_SIZE else 0
    return {"buffered": len(buffer), "written": written}
