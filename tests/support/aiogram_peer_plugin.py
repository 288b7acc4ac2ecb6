"""pytest plugin: aiogram's own storage tests (tests/test_fsm/storage/test_storages.py) run on
SessionCacheStorage.

Loaded by tests/test_peer_suites.py into a pytest run inside aiogram's source distribution, with
``--noconftest`` (aiogram's conftest imports MongoDB drivers it needs for other storages). The
suite asks for ``storage`` indirectly, naming a fixture; here "memory_storage" is our storage on
``memory://`` and "redis_storage" our storage on the real Redis at SESSIONCACHE_PEER_URL, each
in a fresh namespace. It imports nothing from our tests package (aiogram's is also ``tests``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram.fsm.storage.base import StorageKey

from sessioncache.backends import forget_memory_server
from sessioncache.integrations.aiogram import SessionCacheStorage

URL = os.environ.get("SESSIONCACHE_PEER_URL", "")
_URLS = {"memory_storage": "memory://", "redis_storage": URL}


@pytest.fixture
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    base = _URLS[request.param]
    name = uuid.uuid4().hex[:12]
    url = f"{base}{name}" if base == "memory://" else base
    namespace = f"peer{name}"
    storage = SessionCacheStorage.from_url(url, namespace=namespace, socket_timeout=10)
    try:
        yield storage
    finally:
        client = storage.client
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            await client.delete(key)
        await storage.close()
        if base == "memory://":
            forget_memory_server(name)


@pytest.fixture
def storage_key() -> StorageKey:
    return StorageKey(chat_id=-42, user_id=42, bot_id=42)
