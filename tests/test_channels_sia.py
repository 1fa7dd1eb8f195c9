"""SIA DC-09 against pysiaalarm (Home Assistant's receiver) over TCP and UDP, plain and AES."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pysiaalarm import SIAAccount
from pysiaalarm.aio import SIAClient
from pysiaalarm.utils import CommunicationsProtocol

from alerts.channels import ChannelError, MessageKind
from alerts.channels.sia_dc09 import SiaDc09Channel, parse_key
from hub.config import SiaDc09Channel as SiaConfig
from tests.brokers import free_port
from tests.test_channels_webhook import ALERT

pytestmark = pytest.mark.timeout(30)

KEY = "AAAAAAAAAAAAAAAA"  # pysiaalarm uses the characters themselves as the AES key


class Centre:
    def __init__(self) -> None:
        self.events: list[object] = []

    async def received(self, event: object) -> None:
        self.events.append(event)


async def run_centre(protocol: str, key: str | None) -> AsyncIterator[tuple[Centre, int]]:
    centre = Centre()
    port = free_port()
    proto = CommunicationsProtocol.UDP if protocol == "udp" else CommunicationsProtocol.TCP
    client = SIAClient("127.0.0.1", port, [SIAAccount("1234", key)], centre.received, protocol=proto)
    await client.async_start()
    try:
        yield centre, port
    finally:
        await asyncio.sleep(0.05)  # let the receiver finish its side of the closed connection
        await client.async_stop()


@pytest.mark.parametrize("key", [None, KEY])
async def test_alarm_restore_and_link_test_are_acknowledged(key: str | None) -> None:
    protocol = "tcp"
    async for centre, port in run_centre(protocol, key):
        config = SiaConfig(host="127.0.0.1", port=port, account="1234", key=key, protocol=protocol)  # type: ignore[arg-type]
        channel = SiaDc09Channel(config, timeout=3)
        await channel.send(ALERT)
        await channel.send(ALERT.__class__(**{**_fields(ALERT), "kind": MessageKind.RESOLVED}))
        await channel.send(ALERT.__class__(**{**_fields(ALERT), "kind": MessageKind.HEARTBEAT}))
        await asyncio.sleep(0.05)
        codes = [getattr(e, "code", None) for e in centre.events]
        assert codes == ["QA", "QR", "RP"]  # help alarm, its restore, the NULL link test
        assert all(getattr(e, "account", None) == "1234" for e in centre.events)
        assert "bathroom" in str(getattr(centre.events[0], "message", ""))


async def test_wrong_account_is_nak() -> None:
    async for centre, port in run_centre("tcp", None):
        config = SiaConfig(host="127.0.0.1", port=port, account="9999")
        with pytest.raises(ChannelError, match="NAK") as failed:
            await SiaDc09Channel(config, timeout=3).send(ALERT)
        assert not failed.value.permanent
        assert centre.events == []


async def test_no_centre_listening() -> None:
    config = SiaConfig(host="127.0.0.1", port=free_port(), account="1234")
    with pytest.raises(ChannelError):
        await SiaDc09Channel(config, timeout=1).send(ALERT)


def test_keys() -> None:
    assert parse_key("00112233445566778899aabbccddeeff") == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert parse_key(KEY) == KEY.encode()
    with pytest.raises(ChannelError):
        parse_key("short")


def _fields(message: object) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}  # type: ignore[arg-type]


async def test_udp_frames_decode_at_pysiaalarm() -> None:
    async for centre, port in run_centre("udp", KEY):
        config = SiaConfig(host="127.0.0.1", port=port, account="1234", key=KEY, protocol="udp")
        with pytest.raises(ChannelError, match="no ACK"):  # pysiaalarm's UDP side cannot answer
            await SiaDc09Channel(config, timeout=0.5).send(ALERT)
        assert [getattr(e, "code", None) for e in centre.events] == ["QA"]


class _UdpAcker(asyncio.DatagramProtocol):
    """A minimal DC-09 UDP receiver: decode with siadc09, answer ACK with the same sequence."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.frames: list[object] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        from siadc09 import message

        frame = message.parse_frame(data, keys=self.key)
        self.frames.append(frame)
        ack = message.AckMessage(frame.account, seq=frame.seq, timestamp=frame.timestamp)
        assert self.transport is not None
        self.transport.sendto(ack.encode(), addr)


@pytest.mark.parametrize("key", [None, KEY])
async def test_udp_with_an_acknowledging_receiver(key: str | None) -> None:
    loop = asyncio.get_running_loop()
    transport, acker = await loop.create_datagram_endpoint(
        lambda: _UdpAcker(key.encode() if key else None), local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        config = SiaConfig(host="127.0.0.1", port=port, account="1234", key=key, protocol="udp")
        await SiaDc09Channel(config, timeout=2).send(ALERT)
        [frame] = acker.frames
        assert frame.idtoken == "SIA-DCS"
        assert frame.encrypted is bool(key)
    finally:
        transport.close()
