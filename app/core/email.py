"""Outgoing email: SMTP (aiosmtplib) when SMTP_HOST is set, else the console mailer, which writes messages to the
log for development. Messages are sent off the request path; a failing mail server is logged and never fails the
request that caused the message."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from app.core.config import Settings

logger = logging.getLogger(__name__)

# Every line the console mailer logs starts with this: its messages carry bearer links (verification, password
# reset), which belong nowhere else in a log, and a secrets scan of the logs can tell them apart.
CONSOLE_MARK = "console-mail |"


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()

    def send_later(self, mail: Mail) -> None:
        """Queue `mail` for delivery in the background and return at once."""
        task = asyncio.get_running_loop().create_task(self._deliver(mail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every queued message (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _deliver(self, mail: Mail) -> None:
        settings = self.settings
        if settings.mail_to_console:
            text = f"to {mail.to} (development console mailer: NOT sent)\nsubject: {mail.subject}\n{mail.body}"
            logger.info("\n".join(f"{CONSOLE_MARK} {line}" for line in text.splitlines()))
            return
        message = EmailMessage()
        message["From"] = settings.smtp_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_user,
                password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                use_tls=settings.smtp_tls == "tls",
                start_tls=True if settings.smtp_tls == "starttls" else False,
                timeout=settings.smtp_timeout,
            )
        except Exception:
            logger.exception("could not send email %r to %s", mail.subject, mail.to)
