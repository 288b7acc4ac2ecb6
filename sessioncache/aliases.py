"""Type aliases shared by the modules' signatures."""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis, RedisCluster

RedisClient: TypeAlias = Redis | RedisCluster
"""A redis.asyncio client: standalone (also our LeanRedis and fakeredis' FakeRedis, both
subclasses of Redis) or cluster. What ``backends.connect()`` returns and every store takes."""
