"""A short tour of the API on the in-process default backend: no Redis install needed."""

from __future__ import annotations

import asyncio

from .errors import InvalidTransition, VersionConflict
from .events import EventType
from .models import Platform
from .redaction import redact_url
from .system import (
    create_session,
    get_session,
    initialize_sessions,
    shutdown_sessions,
    update_session,
)


async def run_demo(storage_type: str = "MEMORY", url: str | None = None) -> None:
    config = {"url": url} if url else None
    system = await initialize_sessions(storage_type=storage_type, storage_config=config)
    print(f"backend: {storage_type} {redact_url(url or 'memory://default')}")
    session = await create_session(chat_id="chat_1", user_id="user_1", platform=Platform.TELEGRAM)
    print(f"created   {session.session_id}  version={session.version} state={session.state}")

    session = await update_session(session.session_id, data={"step": "greeting", "lang": "en"})
    print(f"updated   data={session.data} version={session.version}")

    try:
        await update_session(session.session_id, data={"step": "late"}, expected_version=1)
    except VersionConflict as exc:
        print(f"refused   stale write: {exc}")

    await system.touch_session(session.session_id, messages=3)
    again = await system.get_or_create_session("chat_1", "user_1", Platform.TELEGRAM)
    print(
        f"reused    same session: {again.session_id == session.session_id}, "
        f"messages={again.message_count}"
    )

    moved = await system.transition(session.session_id, "active", reason="first message")
    await system.track_event(session.session_id, EventType.MESSAGE_RECEIVED, text="hello")
    print(f"state     {moved.state} (version {moved.version}), enforced inside Redis")
    try:
        await system.transition(session.session_id, "new")
    except InvalidTransition as exc:
        print(f"refused   {exc}")

    await system.create_session("dm_1", "user_1", Platform.DISCORD, data={"topic": "billing"})
    sessions = await system.list_user_sessions("user_1")
    print(f"user_1 has {len(sessions)} sessions: {[s.platform.value for s in sessions]}")

    fetched = await get_session(session.session_id)
    assert fetched is not None
    print(f"expires   {fetched.expires_at.isoformat()} (TTL refreshed on activity)")
    stats = await system.get_statistics()
    print(f"stats     sessions by state {dict(stats.sessions_by_state)}")
    print(f"health    {await system.health_check()}")
    for s in sessions:
        await system.delete_session(s.session_id)
    await shutdown_sessions()


def main() -> None:
    asyncio.run(run_demo())


if __name__ == "__main__":
    main()
