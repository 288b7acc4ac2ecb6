"""Checksums and signatures of backups: SHA-256 of parts and files, HMAC-SHA256 of manifests."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from ..errors import IntegrityError, ValidationError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: object) -> bytes | None:
    """Normalise a configured HMAC key (str or bytes, at least 16 bytes) or None."""
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes) or len(key) < 16:
        raise ValidationError("backup_key must be str or bytes of at least 16 bytes")
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key, so a manifest can say which key signed it."""
    return hashlib.sha256(b"sessioncache-backup-key:" + key).hexdigest()[:16]


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest without its signature, keys sorted."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(manifest: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, canonical(manifest), hashlib.sha256).hexdigest()


def check_signature(manifest: dict[str, Any], key: bytes | None, *, required: bool) -> bool:
    """Raise IntegrityError unless the signature matches the key; True if it was checked.

    With a key configured every backup must carry a valid signature from it. Without a key a
    signature cannot be checked (False), and ``required`` (pickle formats) refuses the backup.
    """
    signature = manifest.get("signature")
    if key is None:
        if required:
            raise IntegrityError(
                "this backup can only be loaded with a verified signature, and no backup_key "
                "is configured"
            )
        return False
    if not isinstance(signature, str) or not signature:
        raise IntegrityError("the backup is unsigned but a backup_key is configured")
    if not hmac.compare_digest(signature, sign(manifest, key)):
        if manifest.get("key_id") not in (None, key_id(key)):
            raise IntegrityError("the backup was signed with a different key")
        raise IntegrityError("the manifest signature does not match: forged or damaged manifest")
    return True
