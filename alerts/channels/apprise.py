"""Messengers and SMS gateways through Apprise (ntfy, Telegram, Signal, many SMS providers).

Only `await Apprise.async_notify(...)`: Apprise sends in its own threads there, while plain
`notify()` would block the event loop for seconds.
"""

from __future__ import annotations

import warnings
from typing import Any

from alerts.channels import ChannelError, Message


def _quiet_apprise() -> Any:
    # Apprise's first add() imports the deprecated `imghdr` (Python 3.11/3.12): not our warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*imghdr.*", category=DeprecationWarning)
        import apprise

        return apprise


class AppriseChannel:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        # Messenger URLs carry their tokens in the path: only the scheme may appear in logs.
        self.label = f"apprise {url.split('://', 1)[0]}"
        self._apobj: Any = None

    def _client(self) -> Any:
        if self._apobj is None:
            apprise = _quiet_apprise()
            client = apprise.Apprise()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*imghdr.*", category=DeprecationWarning)
                added = client.add(self.url)
            if not added:
                raise ChannelError(f"{self.label}: Apprise does not understand this URL", permanent=True)
            self._apobj = client
        return self._apobj

    async def send(self, message: Message) -> None:
        client = self._client()
        try:
            result = await client.async_notify(body=message.body, title=message.title, timeout=self.timeout)
        except Exception as err:  # Apprise plugins raise anything; our callers expect ChannelError
            raise ChannelError(f"{self.label}: {type(err).__name__}: {err}") from err
        if not result:
            raise ChannelError(f"{self.label}: not delivered ({result!r})")
