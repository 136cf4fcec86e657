"""Allocates and touches 1 GiB: with MemorySize 128 the instance is killed for memory."""


def handler(event, context):
    if isinstance(event, dict) and event.get("ok"):
        return {"ok": True}
    chunks = []
    for _ in range(64):
        # Filled with a non-zero byte so that every page is really committed.
        chunks.append(b"\x5a" * (16 << 20))
    return {"allocated_mb": 16 * len(chunks)}
