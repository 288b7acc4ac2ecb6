"""Redis Cluster slot arithmetic: the slot of a hash tag, and a short tag for every slot."""

from __future__ import annotations

from binascii import crc_hqx
from functools import lru_cache
from importlib import resources

SLOTS = 16384


def tag_slot(tag: str) -> int:
    """The Redis Cluster slot of a hash tag (CRC16-XMODEM, as the server computes it)."""
    return crc_hqx(tag.encode("utf-8"), 0) % SLOTS


@lru_cache(maxsize=1)
def _slot_tags() -> tuple[str, ...]:
    # slot_tags.txt line n is the shortest hex counter whose CRC16 lands in slot n (generated
    # once: computing it costs ~0.3 s). Checked on load, so a damaged file cannot misroute.
    text = resources.files("sessioncache").joinpath("slot_tags.txt").read_text("ascii")
    tags = tuple(text.split())
    if len(tags) != SLOTS or any(tag_slot(t) != i for i, t in enumerate(tags)):
        raise RuntimeError("sessioncache/slot_tags.txt is damaged; reinstall sessioncache")
    return tags


def slot_tag(slot: int) -> str:
    """A short hash tag that lands in the given slot, so per-slot keys share a slot with users."""
    return _slot_tags()[slot]


def all_slot_tags() -> list[str]:
    """The tag of every cluster slot, in slot order (the statistics shard tags)."""
    return list(_slot_tags())
