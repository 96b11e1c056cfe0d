"""Fixtures of the redis tests. ``redis_cluster`` (one real cluster for the whole session) lives
in tests/conftest.py: tests/contract runs its redis backend on the same cluster."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from redis.asyncio import RedisCluster

T = TypeVar("T")


@pytest.fixture
def run(redis_cluster: str) -> Callable[[Callable[[RedisCluster], Awaitable[T]]], T]:
    """run(fn): await fn(client) on a fresh event loop with a fresh cluster client.

    Async clients belong to one event loop, and tests here are plain functions, so each call
    gets its own loop and client (binary replies: sort keys are bytes).
    """

    def runner(fn: Callable[[RedisCluster], Awaitable[T]]) -> T:
        async def main() -> T:
            client = RedisCluster.from_url(redis_cluster)
            try:
                return await fn(client)
            finally:
                await client.aclose()

        return asyncio.run(main())

    return runner
