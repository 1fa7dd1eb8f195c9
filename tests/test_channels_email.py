"""E-mail against a real SMTP server (aiosmtpd in the test's loop) with STARTTLS and login."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alerts.channels import ChannelError, Message, MessageKind, SmtpSettings
from alerts.channels.email import EmailChannel
from tests.brokers import free_port

pytestmark = pytest.mark.timeout(30)


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class Inbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.mails.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
        self.arrived.set()
        return "250 OK"


def authenticator(server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"hub" and auth_data.password == b"pw"
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
async def smtp(tmp_path: Path) -> AsyncIterator[tuple[Inbox, SmtpSettings]]:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            inbox,
            hostname="hub-test",
            tls_context=server_tls,
            require_starttls=True,
            authenticator=authenticator,
            auth_require_tls=True,
        ),
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    settings = SmtpSettings(
        host="127.0.0.1",
        port=port,
        username="hub",
        password="pw",
        sender="hub@flat.example",
        tls_context=client_tls,
    )
    try:
        yield inbox, settings
    finally:
        server.close()
        await server.wait_closed()


def alert(language: str = "de", **changes: Any) -> Message:
    fields: dict[str, Any] = {
        "key": "inc1/0/daughter",
        "kind": MessageKind.ALERT,
        "flat_id": "f1",
        "flat_name": "Musterwohnung",
        "contact": "daughter",
        "language": language,
        "created": 1772521200.0,
        "incident_id": "inc1",
        "incident_kind": "fall",
        "severity": "critical",
        "room": "Bad",
        "reason": "Sturz erkannt, danach keine Bewegung",
        "raised": 1772521200.0,
        "ack_url": "https://hub.test/ack/T",
        "video_url": "https://meet.example.org/x",
    }
    fields.update(changes)
    return Message(**fields)


async def test_german_mail_over_starttls_with_login(smtp: tuple[Inbox, SmtpSettings]) -> None:
    inbox, settings = smtp
    await EmailChannel("tochter@example.org", settings).send(alert())
    [(rcpt, mail)] = inbox.mails
    assert rcpt == ["tochter@example.org"]
    assert mail["Subject"] == "Alarm: Sturz (Bad) - Musterwohnung"
    body = mail.get_content().replace("\r\n", "\n")
    assert "Zeit: 03.03.2026 08:00" in body
    assert "Bestätigen (ich kümmere mich):\nhttps://hub.test/ack/T" in body
    assert "Videoanruf:\nhttps://meet.example.org/x" in body
    assert mail["Message-ID"].endswith("@flat.example>")


async def test_english_template_and_demo_label(smtp: tuple[Inbox, SmtpSettings]) -> None:
    inbox, settings = smtp
    await EmailChannel("son@example.org", settings).send(alert("en", demo=True, kind=MessageKind.REMINDER))
    [(_, mail)] = inbox.mails
    assert " ".join(str(mail["Subject"]).split()).startswith(
        "[DEMO] Reminder, nobody has acknowledged yet: Fall (Bad)"
    )
    assert "DEMO - this is a demonstration" in mail.get_content()
    assert "Time: 2026-03-03 08:00" in mail.get_content()
    assert mail["X-AAL-Demo"] == "yes"


async def test_wrong_password_is_permanent(smtp: tuple[Inbox, SmtpSettings]) -> None:
    from dataclasses import replace

    _, settings = smtp
    with pytest.raises(ChannelError) as failed:
        await EmailChannel("a@example.org", replace(settings, password="wrong")).send(alert())
    assert failed.value.permanent


async def test_untrusted_certificate_is_refused(smtp: tuple[Inbox, SmtpSettings]) -> None:
    from dataclasses import replace

    inbox, settings = smtp
    with pytest.raises(ChannelError):
        await EmailChannel("a@example.org", replace(settings, tls_context=ssl.create_default_context())).send(
            alert()
        )
    assert inbox.mails == []


async def test_smtp_down_is_a_retryable_error() -> None:
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), timeout=2)
    with pytest.raises(ChannelError) as failed:
        await EmailChannel("a@example.org", settings).send(alert())
    assert not failed.value.permanent
