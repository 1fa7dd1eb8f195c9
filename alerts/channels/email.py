"""E-mail over SMTP with STARTTLS and login (aiosmtplib), German and English templates.

The mail carries `Message-ID` derived from the idempotency key, so a retried message is one
thread in the reader's mailbox and a receiving system can drop duplicates.
"""

from __future__ import annotations

import hashlib
import string
from email.message import EmailMessage
from email.utils import formatdate
from typing import Final

import aiosmtplib

from alerts.channels import TEXTS, ChannelError, Message, MessageKind, SmtpSettings

TEMPLATES: Final = {
    "de": string.Template(
        "Guten Tag,\n\n"
        "$headline\n\n"
        "${demo}"
        "Was: $what\n"
        "Wohnung: $flat\n"
        "Raum: $room\n"
        "Zeit: $time\n"
        "Grund: $reason\n"
        "${details}"
        "${actions}"
        "\nDiese Nachricht wurde vom aal-hub der Wohnung automatisch gesendet.\n"
    ),
    "en": string.Template(
        "Hello,\n\n"
        "$headline\n\n"
        "${demo}"
        "What: $what\n"
        "Flat: $flat\n"
        "Room: $room\n"
        "Time: $time\n"
        "Reason: $reason\n"
        "${details}"
        "${actions}"
        "\nThis message was sent automatically by the flat's aal-hub.\n"
    ),
}

HEADLINES: Final = {
    "de": {
        MessageKind.ALERT: "in der Wohnung braucht vielleicht jemand Hilfe. Bitte bestätigen Sie, "
        "dass Sie sich kümmern:",
        MessageKind.REMINDER: "noch hat niemand den Alarm bestätigt. Bitte bestätigen Sie, dass Sie "
        "sich kümmern:",
        MessageKind.ACKNOWLEDGED: "der Alarm wurde übernommen. Sie müssen nichts weiter tun.",
        MessageKind.RESOLVED: "der Alarm ist erledigt.",
        MessageKind.HEARTBEAT: "der Hub ist aktiv.",
    },
    "en": {
        MessageKind.ALERT: "someone in the flat may need help. Please confirm that you are taking care "
        "of it:",
        MessageKind.REMINDER: "nobody has acknowledged the alarm yet. Please confirm that you are "
        "taking care of it:",
        MessageKind.ACKNOWLEDGED: "the alarm has been taken. There is nothing more for you to do.",
        MessageKind.RESOLVED: "the alarm is resolved.",
        MessageKind.HEARTBEAT: "the hub is alive.",
    },
}


def render(message: Message, sender: str, recipient: str) -> EmailMessage:
    words = TEXTS[message.language]
    actions = ""
    if message.kind in {MessageKind.ALERT, MessageKind.REMINDER}:
        if message.ack_url:
            actions += f"\n{words['ack']}:\n{message.ack_url}\n"
        if message.video_url:
            actions += f"\n{words['video']}:\n{message.video_url}\n"
    details = ""
    if message.actor:
        details += f"{words['by']}: {message.actor}\n"
    if message.note:
        details += f"{words['note']}: {message.note}\n"
    text = TEMPLATES[message.language].substitute(
        headline=HEADLINES[message.language][message.kind],
        demo=f"{words['demo']}\n\n" if message.demo else "",
        what=message.what,
        flat=message.flat_name,
        room=message.room or "-",
        time=message.local_time(message.raised),
        reason=message.reason or "-",
        details=details,
        actions=actions,
    )
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = message.title
    mail["Date"] = formatdate(message.created, localtime=False)
    domain = sender.rpartition("@")[2] or "aal-hub.invalid"
    mail["Message-ID"] = f"<{hashlib.sha256(message.key.encode()).hexdigest()[:32]}@{domain}>"
    mail["Auto-Submitted"] = "auto-generated"
    if message.demo:
        mail["X-AAL-Demo"] = "yes"
    mail.set_content(text)
    return mail


class EmailChannel:
    def __init__(self, address: str, settings: SmtpSettings | None) -> None:
        self.address = address
        self.settings = settings
        self.label = f"email {address}"

    async def send(self, message: Message) -> None:
        smtp = self.settings
        if smtp is None:
            raise ChannelError("e-mail: no SMTP server configured", permanent=True)
        mail = render(message, smtp.sender, self.address)
        try:
            await aiosmtplib.send(
                mail,
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=smtp.password,
                start_tls=smtp.starttls,
                tls_context=smtp.tls_context,
                timeout=smtp.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as err:
            raise ChannelError(f"{self.label}: recipient refused: {err}", permanent=True) from err
        except aiosmtplib.SMTPResponseException as err:
            # 5xx is the server's final word (bad login, policy); 4xx is worth a retry.
            raise ChannelError(
                f"{self.label}: SMTP {err.code} {err.message}", permanent=err.code >= 500
            ) from err
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            raise ChannelError(f"{self.label}: {type(err).__name__}: {err}") from err
