"""Serves feed.v1.Feed/Latest: a server-streaming gRPC method.

Wisp decodes the binary request into protobuf's JSON mapping (`{"topic": ..., "limit": ...}`, every
field present; a REST caller's JSON arrives as sent, so fields may be missing), and this handler
answers with the stream's messages. Returning a list sends them all
at once; a function that streams its response (Node's `awslambda.streamifyResponse`) can write one
JSON document per line instead, and each is sent as soon as it is written.
"""


def handler(event, context):
    topic = event.get("topic") or "news"
    limit = event.get("limit") or 3
    return [{"index": i, "title": "%s #%d" % (topic, i)} for i in range(limit)]
