"""Identity links: platform identities joined to one person by verified one-time codes."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import IdentityOwned, LinkError, LinkRateLimited, ValidationError
from .identity import check_platform, encode_part, normalize_id
from .keys import KeySchema
from .scripts import ScriptRegistry, registry

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: codes are read and typed
_CODE_RE = re.compile(rf"([{_ALPHABET}]{{6}})-([{_ALPHABET}]{{8}})")  # use fullmatch()


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """How link codes behave: lifetime, and the per-identity rate limits that stop guessing."""

    code_ttl: float = 600.0
    """Seconds a code stays redeemable."""
    max_tries_per_code: int = 5
    """Wrong secrets a code survives; then it is burned (its identity starts a new one)."""
    max_starts: int = 5
    """Codes one identity may start per window."""
    max_failures: int = 10
    """Wrong codes one identity may type per window."""
    window: float = 900.0
    """The rate window, in seconds."""

    def __post_init__(self) -> None:
        for name in ("code_ttl", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValidationError(f"{name} must be a positive number of seconds")
        for name in ("max_tries_per_code", "max_starts", "max_failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be a positive int, got {value!r}")


def identity_name(platform: object, user_id: object) -> str:
    """``platform:user`` with the user id percent-encoded (no space, colon or brace inside)."""
    return f"{check_platform(platform)}:{encode_part(normalize_id(user_id, 'user_id'))}"


def split_identity(name: str) -> tuple[str, str]:
    """Inverse of identity_name(): (platform, encoded user id)."""
    platform, _, user = name.partition(":")
    return platform, user


def _draw(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


class IdentityLinks:
    """Links identities (telegram:123, discord:987, ...) to persons, all in one slot ({idm})."""

    def __init__(self, client: Any, keys: KeySchema, config: LinkConfig | None = None) -> None:
        self.client = client
        self.keys = keys
        self.config = config or LinkConfig()
        self.scripts: ScriptRegistry = registry()

    async def start_link(self, platform: object, user_id: object) -> str:
        """A one-time code for this identity, to be confirmed from another one within
        ``code_ttl``; LinkRateLimited past ``max_starts`` codes in a window."""
        who = identity_name(platform, user_id)
        cfg = self.config
        for _ in range(8):
            public, secret = _draw(6), _draw(8)
            reply = await self.scripts.link_start.run(
                self.client,
                [self.keys.link_code(public), self.keys.link_starts(who), self.keys.link_owners()],
                [who, secret, str(round(cfg.code_ttl * 1000)), str(cfg.max_starts),
                 str(round(cfg.window * 1000))],
            )
            if reply[0] == 1:
                return f"{public}-{secret}"
            if reply[0] == -1:
                raise LinkRateLimited(who, int(reply[1]) / 1000)
        raise LinkError("could not draw a free link code")  # 32^6 codes: practically never

    async def confirm_link(self, platform: object, user_id: object, code: str) -> str:
        """Link this identity to the person of the code's identity; returns the person id.

        The person id is the name of the identity that started the person's first link; an
        identity that unlinked and starts a link again makes a new person, with a fresh id
        if its old person lives on under its name (``<identity>#<8 random letters>``).
        LinkError for a wrong, expired or used code (nothing linked), IdentityOwned if this
        identity already belongs to another person, LinkRateLimited after too many wrong codes.
        """
        who = identity_name(platform, user_id)
        cfg = self.config
        match = _CODE_RE.fullmatch(code.strip().upper()) if isinstance(code, str) else None
        public, secret = (match.group(1), match.group(2)) if match else ("-", "-")
        reply: Any = [-6]
        for _ in range(8):  # -6: the drawn person id is taken (32^8 ids: practically never)
            reply = await self.scripts.link_confirm.run(
                self.client,
                [self.keys.link_code(public), self.keys.link_fails(who),
                 self.keys.link_owners(), self.keys.link_members()],
                [who, secret, str(cfg.max_tries_per_code), str(cfg.max_failures),
                 str(round(cfg.window * 1000)), _draw(8)],
            )
            if reply[0] != -6:
                break
        status = reply[0]
        if status == 1:
            return str(reply[1].decode())
        if status == -3:
            raise LinkRateLimited(who, int(reply[1]) / 1000)
        if status == -4:
            raise IdentityOwned(f"{who} is already linked to another person; unlink it first")
        if status == -5:
            raise LinkError("a code must be confirmed from another identity than its own")
        if status == -6:
            raise LinkError("could not draw a free person id; nothing was linked")
        raise LinkError("wrong, expired or already used link code; nothing was linked")

    async def unlink(self, platform: object, user_id: object) -> bool:
        """Take the identity out of its person; False if it was not linked."""
        who = identity_name(platform, user_id)
        reply = await self.scripts.link_remove.run(
            self.client, [self.keys.link_owners(), self.keys.link_members()], [who]
        )
        return bool(reply[0] == 1)

    async def persons_of(self, identities: list[str]) -> list[str]:
        """The distinct persons these identities (``platform:user``) belong to (one HMGET)."""
        if not identities:
            return []
        raw = await self.client.hmget(self.keys.link_owners(), identities)
        return sorted({r.decode() for r in raw if r is not None})

    async def person_of(self, platform: object, user_id: object) -> str | None:
        """The person an identity belongs to, or None."""
        raw = await self.client.hget(self.keys.link_owners(), identity_name(platform, user_id))
        return None if raw is None else str(raw.decode())

    async def linked_identities(self, platform: object, user_id: object) -> list[str]:
        """The person's identities (``platform:user``), this one included; [itself] if unlinked."""
        who = identity_name(platform, user_id)
        person = await self.client.hget(self.keys.link_owners(), who)
        if person is None:
            return [who]
        raw = await self.client.hget(self.keys.link_members(), person)
        return sorted((raw or b"").decode().split()) or [who]

    async def members(self, person: str) -> list[str]:
        """The identities of a person id."""
        raw = await self.client.hget(self.keys.link_members(), person)
        return sorted((raw or b"").decode().split())

    @staticmethod
    def suggestions(
        profiles: Mapping[str, Mapping[str, Any]], keys: Iterable[str] = ("email", "phone")
    ) -> list[tuple[str, str, str]]:
        """Pairs of identities whose profiles share an e-mail or phone, for a person to confirm
        with a code: (identity, identity, matched key). Never applied: a guess links nothing."""
        seen: dict[tuple[str, str], str] = {}
        out = []
        for who, profile in sorted(profiles.items()):
            for key in keys:
                value = profile.get(key)
                if not value:
                    continue
                norm = str(value).strip().lower()
                other = seen.get((key, norm))
                if other is not None and other != who:
                    out.append((other, who, key))
                else:
                    seen[(key, norm)] = who
        return out
