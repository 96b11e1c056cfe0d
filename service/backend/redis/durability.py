"""Acknowledged writes that wait for replicas (``WAIT``) or for fsync (``WAITAOF``).

Redis replicates asynchronously: a primary answers a write before any replica has it, so a
failover can lose acknowledged writes (README "Scaling out"). ``WAIT n timeout`` blocks the
*connection* until n replicas acknowledged everything that connection wrote; ``WAITAOF local
replicas timeout`` (Redis >= 7.2, Valkey >= 8.0) until it is fsynced to the AOF of the primary
and of that many replicas. Both are per connection, so the write and its wait must travel on
the same one: ``fcall_acked`` sends the function call and the wait(s) as one pipeline on one
connection of the node that owns the key's slot (redis-py's ``ClusterNode.execute_pipeline``;
a pooled ``execute_command`` could send the WAIT on another connection, which would wait for
nothing). MOVED / ASK / "Function not found" come back before anything ran, so they are
followed here and the pipeline is sent again.

A wait that returns fewer acknowledgements than asked does **not** undo the write: it has
happened on the primary, only its durability is unconfirmed. ``WriteUnconfirmed`` (a 503 of its
own problem type, ``write-unconfirmed``) says exactly that: "maybe written", the one 503 of the
API that does not mean "nothing happened".

    primary:  FCALL rankd_write ...   -> applied, reply R
              WAIT 1 100              -> 1: R is on a replica -> answer R
                                         0: timeout           -> 503 write-unconfirmed
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode, PipelineCommand
from redis.exceptions import AskError, MovedError, ResponseError

from service.backend.redis.functions import Arg, Client, load_library
from store.errors import WriteUnconfirmed

_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """What an acknowledged write waits for (all 0 = nothing: the plain asynchronous case)."""

    replicas: int = 0  # WAIT: replicas that must have the write
    timeout_ms: int = 100  # for WAIT and WAITAOF (0 would mean "forever": refused by settings)
    aof_local: int = 0  # WAITAOF numlocal (0/1): fsynced to the primary's AOF
    aof_replicas: int = 0  # WAITAOF numreplicas: fsynced to that many replicas' AOF

    @property
    def active(self) -> bool:
        return bool(self.replicas or self.aof_local or self.aof_replicas)

    @property
    def uses_waitaof(self) -> bool:
        return bool(self.aof_local or self.aof_replicas)

    def commands(self) -> list[tuple[Arg, ...]]:
        out: list[tuple[Arg, ...]] = []
        if self.replicas:
            out.append(("WAIT", self.replicas, self.timeout_ms))
        if self.uses_waitaof:
            out.append(("WAITAOF", self.aof_local, self.aof_replicas, self.timeout_ms))
        return out

    def check(self, replies: Sequence[Any]) -> None:
        """Raise WriteUnconfirmed when a wait came back short (or failed: the write ran)."""
        short: list[str] = []
        for command, reply in zip(self.commands(), replies, strict=True):
            if isinstance(reply, Exception):
                short.append(f"{command[0]!s} failed ({type(reply).__name__})")
            elif command[0] == "WAIT":
                if int(reply) < self.replicas:
                    short.append(f"{int(reply)} of {self.replicas} replica(s) acknowledged")
            else:
                local, replicas = int(reply[0]), int(reply[1])
                if local < self.aof_local or replicas < self.aof_replicas:
                    short.append(
                        f"fsynced on {local} of {self.aof_local} primary and {replicas} of "
                        f"{self.aof_replicas} replica(s)"
                    )
        if short:
            raise WriteUnconfirmed(
                "the write was applied on the shard's primary but its durability is not "
                f"confirmed within {self.timeout_ms} ms ({'; '.join(short)}): it may survive "
                "or be lost on a failover; read it back before retrying a non-idempotent write"
            )


async def fcall_acked(
    client: Client, function: str, keys: Sequence[str], args: Sequence[Arg], wait: WaitPolicy
) -> Any:
    """FCALL ``function`` on the node owning ``keys[0]``, then the waits of ``wait`` on the
    same connection; the function's reply, or WriteUnconfirmed (the write did happen)."""
    call: tuple[Arg, ...] = ("FCALL", function, len(keys), *keys, *args)
    waits = wait.commands()
    if not isinstance(client, RedisCluster):
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            for command in (call, *waits):
                pipe.execute_command(*command)
            results = await pipe.execute(raise_on_error=False)
            if _not_loaded(results[0]):
                await load_library(client)
                continue
            if isinstance(results[0], Exception):
                raise results[0]
            wait.check(results[1:])
            return results[0]
        raise results[0]
    await client.initialize()
    node: ClusterNode | None = client.get_node_from_key(keys[0])
    asking = False
    for _ in range(_REDIRECTS):
        if node is None:
            raise MovedError(f"0 {keys[0]}: no node owns the key's slot")  # CLUSTERDOWN-like
        commands: list[tuple[Arg, ...]] = [("ASKING",)] if asking else []
        commands += [call, *waits]
        stack = [PipelineCommand(i, *c) for i, c in enumerate(commands)]
        await node.execute_pipeline(stack)
        at = 1 if asking else 0
        reply = stack[at].result
        asking = False
        if isinstance(reply, MovedError):
            # nothing ran: re-read the slot map and send it again to the new owner
            await client.nodes_manager.initialize()
            node = client.get_node_from_key(keys[0])
            continue
        if isinstance(reply, AskError):
            node = client.get_node(host=reply.host, port=reply.port)
            asking = True
            continue
        if _not_loaded(reply):
            await load_library(client)
            node = client.get_node_from_key(keys[0])
            continue
        if isinstance(reply, Exception):
            raise reply
        wait.check([c.result for c in stack[at + 1 :]])
        return reply
    raise MovedError(f"0 {keys[0]}: still redirected after {_REDIRECTS} tries")


def _not_loaded(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "Function not found" in str(reply)


async def check_waitaof(client: Client) -> str | None:
    """None when every primary knows WAITAOF, else why --redis-wait-aof cannot be honoured.
    Probed with ``WAITAOF 0 0 1`` (met at once where it exists, "unknown command" where not)."""
    probe = ("WAITAOF", 0, 0, 1)
    try:
        if isinstance(client, RedisCluster):
            await client.initialize()
            await client.execute_command(*probe, target_nodes=client.get_primaries())
        else:
            await client.execute_command(*probe)  # type: ignore[no-untyped-call]
    except ResponseError as exc:
        if "unknown command" not in str(exc).lower():
            raise
        return (
            "--redis-wait-aof needs WAITAOF (Redis >= 7.2 or Valkey >= 8.0) on every primary, "
            "and this cluster does not have it: upgrade it or drop the setting"
        )
    return None
