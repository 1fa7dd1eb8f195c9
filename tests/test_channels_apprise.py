"""Apprise (messengers, SMS gateways) through its JSON plugin to a real HTTP receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alerts.channels import ChannelError
from alerts.channels.apprise import AppriseChannel
from tests.alerts_receivers import Receiver
from tests.test_channels_webhook import ALERT

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def apprise_pools() -> Iterator[None]:
    """Apprise keeps two process-wide thread pools; a daemon lives with them, a test must not leak them."""
    yield
    import apprise.apprise as module

    for name in ("_shared_executor", "_coordinator_executor"):
        pool = getattr(module, name)
        if pool is not None:
            pool.shutdown(wait=True)
            setattr(module, name, None)


async def test_apprise_delivers_through_its_json_plugin() -> None:
    async with Receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        await AppriseChannel(f"json://127.0.0.1:{port}/notify").send(ALERT)
        [got] = receiver.messages
        assert got["title"] == ALERT.title
        assert "https://hub.test/ack/T" in got["message"]


async def test_apprise_failure_is_a_channel_error() -> None:
    async with Receiver() as receiver:
        receiver.status = 500
        port = receiver.url.rsplit(":", 1)[1]
        with pytest.raises(ChannelError):
            await AppriseChannel(f"json://127.0.0.1:{port}/notify", timeout=5).send(ALERT)
    with pytest.raises(ChannelError, match="does not understand"):
        await AppriseChannel("nonsense://x").send(ALERT)
