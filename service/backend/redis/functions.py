"""Loading and calling the ``rankd`` Redis Function library (rankd.lua, shipped as package data).

A Function library is persisted and replicated with the data, but a new shard starts without
it, so ``load_library`` runs ``FUNCTION LOAD REPLACE`` on every primary; it is idempotent, so
call it at start-up and after any topology change. ``fcall`` reloads once when a node answers
"Function not found" (nothing ran, so the retry cannot double a ``sum``).

Routing: redis-py's cluster client resolves FCALL keys with ``COMMAND GETKEYS`` -- two extra
round trips per call, which halved client throughput in SCALEOUT.md section 6.1 -- so ``fcall``
picks the node from the first key's slot itself and passes it as ``target_nodes``. MOVED/ASK
are still followed by the client; with explicit target nodes it never retries on a connection
error, which is what a non-idempotent ``sum`` needs (the caller decides about retries).
"""

from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

LIBRARY = "rankd"

Client = Redis | RedisCluster
Arg = str | bytes | int


def library_code() -> str:
    return resources.files(__package__).joinpath("rankd.lua").read_text(encoding="utf-8")


async def load_library(client: Client, code: str | None = None) -> int:
    """FUNCTION LOAD REPLACE on every primary (or the single node); returns how many nodes."""
    code = library_code() if code is None else code
    if isinstance(client, RedisCluster):
        await client.initialize()  # no-op once the slot map is known; needed after a failover
        primaries = client.get_primaries()
        await client.execute_command("FUNCTION", "LOAD", "REPLACE", code, target_nodes=primaries)
        return len(primaries)
    await client.execute_command("FUNCTION", "LOAD", "REPLACE", code)  # type: ignore[no-untyped-call]
    return 1


async def library_loaded(client: Client) -> bool:
    """True when every primary (or the single node) has the library: what /readyz reports."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        replies = await client.execute_command(
            "FUNCTION", "LIST", "LIBRARYNAME", LIBRARY, target_nodes=client.get_primaries()
        )
        if not isinstance(replies, dict):  # one primary: the bare reply
            replies = {"": replies}
        return all(_lists(LIBRARY, r) for r in replies.values())
    reply = await client.execute_command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY)  # type: ignore[no-untyped-call]
    return _lists(LIBRARY, reply)


def _lists(name: str, reply: Any) -> bool:
    # LIBRARYNAME is a pattern: "rankd" would also list "rankd2", so compare names exactly.
    for lib in reply or ():
        # redis-py parses the reply into a dict; a raw RESP2 reply is a flat field/value list
        fields = lib if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2], strict=True))
        if fields.get(b"library_name", fields.get("library_name")) in (name, name.encode()):
            return True
    return False


async def fcall(
    client: Client,
    function: str,
    keys: Sequence[str],
    args: Sequence[Arg],
    *,
    readonly: bool = False,
) -> Any:
    """Call one function of the library on the node that owns ``keys`` (all in one slot)."""
    command = "FCALL_RO" if readonly else "FCALL"
    try:
        return await _call(client, command, function, keys, args)
    except ResponseError as exc:
        if "Function not found" not in str(exc):
            raise
    await load_library(client)
    return await _call(client, command, function, keys, args)


async def _call(
    client: Client, command: str, function: str, keys: Sequence[str], args: Sequence[Arg]
) -> Any:
    if isinstance(client, RedisCluster):
        await client.initialize()
        node = client.get_node_from_key(keys[0])
        return await client.execute_command(
            command, function, len(keys), *keys, *args, target_nodes=node
        )
    return await client.execute_command(command, function, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
