"""How install() hooks python-telegram-bot's Application.migrate_chat_data (PTB unchanged)."""

from __future__ import annotations

from typing import Any

from telegram import Message


def migration_ids(
    message: Message | None, old_chat_id: int | None, new_chat_id: int | None
) -> tuple[int, int]:
    """The (old, new) chat ids of a migrate_chat_data call PTB has already validated."""
    if message is not None:
        old_chat_id = message.migrate_from_chat_id or message.chat.id
        new_chat_id = message.migrate_to_chat_id or message.chat.id
    return old_chat_id, new_chat_id  # type: ignore[return-value]


def _note(application: Any, old_chat_id: int, new_chat_id: int) -> None:
    application.persistence.note_migration(old_chat_id, new_chat_id)


_HOOKED: dict[type[Any], type[Any]] = {}  # one subclass per Application class, ever


def _hooked_class(cls: type[Any]) -> type[Any]:
    """A subclass adding nothing but the hook (``__slots__ = ()``: its instances keep cls's
    layout, so an instance's __class__ may be switched to it)."""
    if cls in _HOOKED:
        return _HOOKED[cls]

    class Hooked(cls):  # type: ignore[misc,valid-type]
        __slots__ = ()
        _sessioncache_hooked = True

        def migrate_chat_data(
            self,
            message: Message | None = None,
            old_chat_id: int | None = None,
            new_chat_id: int | None = None,
        ) -> None:
            super().migrate_chat_data(
                message=message, old_chat_id=old_chat_id, new_chat_id=new_chat_id
            )
            _note(self, *migration_ids(message, old_chat_id, new_chat_id))

    Hooked.__name__, Hooked.__qualname__ = cls.__name__, cls.__qualname__
    Hooked.__module__ = cls.__module__
    _HOOKED[cls] = Hooked
    return Hooked


def hook_migrations(application: Any, *, switch_class: bool = False) -> None:
    """After each ``application.migrate_chat_data`` call, tell its persistence
    (``note_migration``). Wraps the bound method on the instance; an Application without an
    instance __dict__ (Python 3.13+, where every base class declares slots) is switched to a
    subclass that only adds the hook."""
    if getattr(type(application), "_sessioncache_hooked", False):
        return
    original = application.migrate_chat_data
    if getattr(original, "_sessioncache_hook", False):
        return  # already hooked (install() called twice)

    def migrate_chat_data(
        message: Message | None = None,
        old_chat_id: int | None = None,
        new_chat_id: int | None = None,
    ) -> None:
        original(message=message, old_chat_id=old_chat_id, new_chat_id=new_chat_id)
        _note(application, *migration_ids(message, old_chat_id, new_chat_id))

    migrate_chat_data._sessioncache_hook = True  # type: ignore[attr-defined]
    if not switch_class:
        try:
            application.migrate_chat_data = migrate_chat_data
            return
        except AttributeError:
            pass
    application.__class__ = _hooked_class(type(application))
