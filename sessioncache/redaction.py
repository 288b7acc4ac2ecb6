"""Secrets out of text: the one place URLs and messages are redacted before anyone sees them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"

# The password of user:password@: after "//", up to the first '@' ('?', '#' and whitespace
# end it, so an '@' in a query is not taken for one). Text without "//" (a mistyped scheme
# such as "redis:/", or none) masks the whole user:password of a word instead.
_USERINFO = re.compile(r"(//[^/?#@\s]*?:)([^@?#\s]*)@")
_USERINFO_NO_SLASHES = re.compile(r"((?:^|(?<=\s))[^/?#@\s]*?:|(?:^|(?<=\s)))([^@?#\s]*)@")
# Query options that carry a secret (redis-py reads ?password= and ?ssl_password=); in a
# message, a ": " after the URL ends the value.
_SECRET_OPTION = re.compile(
    r"([?&;][^=&#\s]*(?:password|passwd|pwd|secret|token|key)=)([^&#\s]*?)(?=[&#\s]|: |$)",
    re.IGNORECASE,
)
_SECRET_NAME = re.compile(r"password|passwd|pwd|secret|token|(^|_)key$", re.IGNORECASE)


def _userinfo(text: str) -> re.Pattern[str]:
    return _USERINFO if "//" in text else _USERINFO_NO_SLASHES


def redact_url(url: object) -> str:
    """The URL with its password (in the authority or in the query) replaced by ``***``."""
    text = str(url)
    text = _userinfo(text).sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _SECRET_OPTION.sub(lambda m: f"{m.group(1)}{MASK}", text)


def is_secret_name(name: str) -> bool:
    """Whether an option of this name holds a secret (password, ssl_password, token, key)."""
    return bool(_SECRET_NAME.search(name))


def url_secrets(url: object) -> list[str]:
    """The secret strings a URL carries, raw and percent-decoded (to scrub them from text)."""
    text = str(url)
    found = [m.group(2) for m in _userinfo(text).finditer(text)]
    found += [m.group(2) for m in _SECRET_OPTION.finditer(text)]
    try:
        parts = urlsplit(text)
        found += [parts.password or ""]
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
    """An error or log message made safe: the URL's secrets scrubbed, URLs in it redacted."""
    found = [*secrets, *(url_secrets(url) if url is not None else ())]
    return redact_url(scrub(text, found))
