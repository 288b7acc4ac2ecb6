"""python-telegram-bot without a network: a request object answering the Bot API locally."""

from __future__ import annotations

import json
from typing import Any

from telegram import Update
from telegram.request import BaseRequest, RequestData

BOT_ID = 4242
_BOT = {"id": BOT_ID, "is_bot": True, "first_name": "Test", "username": "test_bot"}


class LocalRequest(BaseRequest):
    """Answers getMe and sendMessage like the Bot API would; records what was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    @property
    def read_timeout(self) -> float | None:
        return 1.0

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        api_method = url.rsplit("/", 1)[-1]
        params = request_data.parameters if request_data else {}
        if api_method == "getMe":
            result: Any = _BOT
        elif api_method == "sendMessage":
            self.sent.append(dict(params))
            chat_id = int(params["chat_id"])
            result = {
                "message_id": len(self.sent),
                "date": 0,
                "chat": {"id": chat_id, "type": "private"},
                "from": _BOT,
                "text": params.get("text", ""),
            }
        else:
            result = True
        return 200, json.dumps({"ok": True, "result": result}).encode()


def text_update(update_id: int, chat_id: int, user_id: int, text: str, bot: Any) -> Update:
    """A text message update as Telegram would deliver it, bound to `bot` so replies work."""
    user = {"id": user_id, "is_bot": False, "first_name": f"u{user_id}"}
    chat = {"id": chat_id, "type": "private" if chat_id == user_id else "group", "title": "t"}
    message = {"message_id": update_id, "date": 0, "chat": chat, "from": user, "text": text}
    if text.startswith("/"):
        command = text.split()[0]
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return Update.de_json({"update_id": update_id, "message": message}, bot)
