"""Allocates and touches `mb` MiB (1 GiB by default): past MemorySize the instance is killed."""


def handler(event, context):
    if isinstance(event, dict) and event.get("ok"):
        return {"ok": True}
    megabytes = int(event.get("mb", 1024)) if isinstance(event, dict) else 1024
    chunks = []
    for _ in range(max(1, megabytes // 16)):
        # Filled with a non-zero byte so that every page is really committed.
        chunks.append(b"\x5a" * (16 << 20))
    return {"allocated_mb": 16 * len(chunks)}
