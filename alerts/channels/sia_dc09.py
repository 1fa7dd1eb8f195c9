"""SIA DC-09 to an alarm receiving centre (German Hausnotruf centres, security ARCs).

`siadc09` encodes and decodes the frames (incl. AES-CBC); the network code is ours: TCP (one
connection per message, as most receivers expect) or UDP, waiting for the receiver's ACK with the
same sequence number. NAK, DUH, a wrong sequence or silence raise ChannelError.

Quirks (tested against pysiaalarm, Home Assistant's receiver):
- a key of 32/48/64 hex digits is hex-decoded (DC-09's notation); a key of 16/24/32 other
  characters is used as raw characters, as pysiaalarm and many receivers do;
- encrypted frames always carry a timestamp, taken at send time: receivers refuse stale ones;
- pysiaalarm's NAK is a bare `"NAK"` (no LF/CRC/CR frame) that siadc09 cannot parse, so a reply
  that does not parse is read as NAK;
- pysiaalarm's UDP receiver never answers on Python 3.11 (its `connection_made` asserts a transport
  type asyncio does not use): it decodes our frames, but the ACK path is tested with our own
  siadc09-based responder;
- siadc09 sets its loggers to DEBUG on import: we put them back to WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from pathlib import Path
from typing import Any, Final

from alerts.channels import ChannelError, Message, MessageKind
from hub.config import SiaDc09Channel as SiaConfig


def _import_siadc09() -> tuple[Any, Any, Any]:
    from siadc09 import account, message, xdata

    for name in ("siadc09", "siadc09.message", "siadc09.siadcs"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return account, message, xdata


# SIA event codes (SIA DC-03) per incident kind; restores end the event at the centre.
CODES: Final = {
    "fall": "MA",
    "help": "QA",
    "inactivity": "MA",
    "checkin_missed": "MA",
    "night_wandering": "MA",
    "out_of_bed": "MA",
    "bathroom_stay": "MA",
    "appliance_on": "UA",
    "water_leak": "WA",
    "smoke": "FA",
    "too_hot": "KA",
    "too_cold": "ZA",
    "degraded_safety": "YT",
}
RESTORES: Final = {
    "MA": "MR",
    "QA": "QR",
    "UA": "UR",
    "WA": "WR",
    "FA": "FR",
    "KA": "KR",
    "ZA": "ZR",
    "YT": "YR",
}


def parse_key(raw: str) -> bytes:
    raw = raw.strip()
    if len(raw) in {32, 48, 64} and all(c in "0123456789abcdefABCDEF" for c in raw):
        return bytes.fromhex(raw)
    if len(raw) in {16, 24, 32}:
        return raw.encode("ascii")
    raise ChannelError("SIA DC-09 key: expected 32/48/64 hex digits or 16/24/32 characters", permanent=True)


def _hex_or_none(value: str) -> int | None:
    return None if value in {"", "0"} else int(value, 16)


class SiaDc09Channel:
    def __init__(self, config: SiaConfig, *, timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout
        self.label = f"sia_dc09 {config.protocol}://{config.host}:{config.port} #{config.account}"
        self._seq = secrets.randbelow(9000) + 1
        self._account: Any = None

    def _account_ctx(self) -> Any:
        if self._account is None:
            account, _, _ = _import_siadc09()
            key_text = self.config.key
            if key_text is None and self.config.key_file is not None:
                try:
                    key_text = Path(self.config.key_file).read_text(encoding="ascii")
                except OSError as err:
                    raise ChannelError(
                        f"{self.label}: cannot read key file: {err.strerror}", permanent=True
                    ) from err
            try:
                self._account = account.Account(
                    acct=int(self.config.account, 16),
                    pref=_hex_or_none(self.config.prefix),
                    rcvr=_hex_or_none(self.config.receiver),
                    key=parse_key(key_text) if key_text else None,
                )
            except ValueError as err:
                raise ChannelError(
                    f"{self.label}: account/prefix/receiver must be hex: {err}", permanent=True
                ) from err
        return self._account

    def _next_seq(self) -> int:
        self._seq = self._seq % 9999 + 1  # DC-09: decimal 0001..9999
        return self._seq

    def frame(self, message: Message, seq: int) -> bytes | None:
        """The DC-09 frame for a message, or None when the centre has nothing to learn from it."""
        _, siamsg, xdata = _import_siadc09()
        acct = self._account_ctx()
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the centre checks real time
        if message.kind is MessageKind.HEARTBEAT:
            return bytes(siamsg.NullMessage(acct, timestamp=now, seqno=seq).encode())
        code = CODES.get(message.incident_kind or "", "UA")
        if message.kind is MessageKind.RESOLVED:
            code = RESTORES.get(code, "UR")
        elif message.kind is MessageKind.ACKNOWLEDGED:
            return None
        text = (message.reason or message.what).encode("ascii", "replace")[:60].replace(b"]", b")")
        text = text.replace(b"[", b"(").replace(b"|", b"/").replace(b"^", b" ")
        room = (message.room or "").encode("ascii", "replace")[:20].replace(b"^", b" ")
        content = b"#%X|N%s001^%s %s^" % (acct.acct, code.encode(), room, text)
        event = siamsg.Message(
            acct,
            config={
                "idtoken": "SIA-DCS",
                "seqno": seq,
                "data": xdata.Data(content=content),
                "timestamp": now,
            },
        )
        return bytes(event.encode())

    async def send(self, message: Message) -> None:
        seq = self._next_seq()
        frame = self.frame(message, seq)
        if frame is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                if self.config.protocol == "udp":
                    reply = await self._udp(frame)
                else:
                    reply = await self._tcp(frame)
        except TimeoutError as err:
            raise ChannelError(f"{self.label}: no ACK within {self.timeout:g} s") from err
        except OSError as err:
            raise ChannelError(f"{self.label}: {type(err).__name__}: {err}") from err
        self._check(reply, seq)

    def _check(self, reply: bytes, seq: int) -> None:
        _, siamsg, _ = _import_siadc09()
        reply = reply.strip(b"\x00")
        try:
            answer = siamsg.parse_frame(reply, keys=self._account_ctx().key)
        except (TypeError, ValueError, RuntimeError) as err:
            if b'"DUH"' in reply:
                raise ChannelError(
                    f"{self.label}: receiver answered DUH (cannot handle)", permanent=True
                ) from err
            raise ChannelError(f"{self.label}: receiver answered NAK or garbage: {reply[:60]!r}") from err
        if answer.idtoken == "DUH":
            raise ChannelError(f"{self.label}: receiver answered DUH (cannot handle)", permanent=True)
        if answer.idtoken != "ACK":
            raise ChannelError(f"{self.label}: receiver answered {answer.idtoken}")
        if answer.seq != seq:
            raise ChannelError(f"{self.label}: ACK for sequence {answer.seq}, expected {seq}")

    async def _tcp(self, frame: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(self.config.host, self.config.port)
        try:
            writer.write(frame)
            await writer.drain()
            reply = b""
            # A framed answer ends with CR; pysiaalarm's NAK is a bare `"NAK"` without framing.
            while b"\r" not in reply and b'"NAK"' not in reply:
                chunk = await reader.read(1024)
                if not chunk:
                    if reply:
                        return reply
                    raise ChannelError(f"{self.label}: connection closed without an answer")
                reply += chunk
            return reply
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _udp(self, frame: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()

        class _Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
                if not answer.done():
                    answer.set_result(data)

            def error_received(self, exc: Exception) -> None:
                if not answer.done():
                    answer.set_exception(exc)

        transport, _ = await loop.create_datagram_endpoint(
            _Protocol, remote_addr=(self.config.host, self.config.port)
        )
        try:
            transport.sendto(frame)
            return await answer
        finally:
            transport.close()
