"""Session scopes: which conversations share one session, refusing any that mixes two people."""

from __future__ import annotations

from .errors import ScopeError, ValidationError

SCOPES = ("chat_user_thread", "person", "chat")
"""chat_user_thread: one session per chat, user and thread (the default); person: one session
for a linked person across channels; chat: one shared session for a group chat."""

CHAT_USER = "~chat"
"""The user part of a chat-scope session: the group, not one of its members."""

PERSON_PLATFORM = "person"


def check_scope(scope: object) -> str:
    """A valid scope name, else ValidationError saying which exist."""
    if scope not in SCOPES:
        raise ValidationError(f"session_scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    return str(scope)


def scoped_identity(
    scope: str,
    platform: object,
    chat_id: object,
    user_id: object,
    thread_id: object = None,
    *,
    person: str | None = None,
    chat_type: str = "private",
) -> tuple[object, object, object, object]:
    """The (platform, chat, user, thread) a message is stored under in this scope.

    "person" uses the person's unified session only for a linked identity (``person`` given):
    an unlinked identity keeps its own, so nobody is merged on a guess. "chat" is refused for
    a direct message: a DM chat id can be shared by several users on some platforms (a web
    widget, a bot's single inbox), and one session per chat would hand one user's
    conversation to another.
    """
    if chat_type not in ("private", "group"):
        raise ValidationError(f"chat_type must be 'private' or 'group', got {chat_type!r}")
    if scope == "chat_user_thread":
        return platform, chat_id, user_id, thread_id
    if scope == "person":
        if person is None:
            return platform, chat_id, user_id, thread_id
        return PERSON_PLATFORM, person, person, None
    if scope == "chat":
        if chat_type != "group":
            raise ScopeError(
                "session_scope 'chat' shares one session among everyone in a chat; for a direct "
                "message that would put different people's messages in one session. Use "
                "'chat_user_thread' (or 'person' for linked identities) for direct messages."
            )
        return platform, chat_id, CHAT_USER, thread_id
    raise ValidationError(f"session_scope must be one of {', '.join(SCOPES)}; got {scope!r}")
