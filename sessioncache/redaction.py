"""Secrets out of text: the one place URLs and messages are redacted before anyone sees them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"

# user:password@ in the authority. Anchored after a slash or at the start, and stopping at
# the first '@', so a mistyped scheme ("redsi:/", "redis//") or no scheme at all is still
# covered; '?' and '#' end it, so an '@' inside a query is not taken for a password.
_USERINFO = re.compile(r"(^|/)([^/?#@\s]*?:)[^@?#\s]*@")
# Query options that carry a secret (redis-py reads ?password= and ?ssl_password=).
_SECRET_OPTION = re.compile(
    r"([?&;][^=&#\s]*(?:password|passwd|pwd|secret|token|key)=)[^&#\s]*", re.IGNORECASE
)
_SECRET_NAME = re.compile(r"password|passwd|pwd|secret|token|(^|_)key$", re.IGNORECASE)


def redact_url(url: object) -> str:
    """The URL with its password (in the authority or in the query) replaced by ``***``."""
    text = str(url)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}@", text)
    return _SECRET_OPTION.sub(lambda m: f"{m.group(1)}{MASK}", text)


def is_secret_name(name: str) -> bool:
    """Whether an option of this name holds a secret (password, ssl_password, token, key)."""
    return bool(_SECRET_NAME.search(name))


def url_secrets(url: object) -> list[str]:
    """The secret strings a URL carries, raw and percent-decoded (to scrub them from text)."""
    text = str(url)
    found: list[str] = []
    for match in _USERINFO.finditer(text):
        found.append(match.group(0)[len(match.group(1)) + len(match.group(2)) : -1])
    for match in _SECRET_OPTION.finditer(text):
        found.append(text[match.end(1) : match.end()])
    try:
        parts = urlsplit(text)
        if parts.password:
            found.append(parts.password)
        found += [v for k, v in parse_qsl(parts.query) if is_secret_name(k)]
    except ValueError:
        pass
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: object, secrets: Iterable[object]) -> str:
    """``text`` with every occurrence of each secret (str or bytes) replaced by ``***``."""
    out = str(text)
    for secret in secrets:
        value = secret.decode(errors="replace") if isinstance(secret, bytes) else str(secret)
        if value:
            out = out.replace(value, MASK)
    return out


def redact_message(text: object, url: object = None, secrets: Iterable[object] = ()) -> str:
    """An error or log message made safe: URLs in it redacted, known secrets scrubbed."""
    found = [*secrets, *(url_secrets(url) if url is not None else ())]
    return redact_url(scrub(text, found))
