"""Alerts for unattended runs: a Telegram message and/or a JSON POST to a webhook.

Configured from the environment only, so secrets stay out of files, arguments and logs:

    QWH_TELEGRAM_BOT_TOKEN, QWH_TELEGRAM_CHAT_ID   Telegram (both needed)
    QWH_TELEGRAM_API_BASE                          the Bot API's base URL (tests point it at a
                                                   local server; default the public Bot API)
    QWH_ALERT_WEBHOOK_URL                          any HTTP endpoint taking a JSON POST

`is_configured()` says whether any channel is set up; `send_alert(alert)` delivers to every
configured channel and returns one `Delivery` per channel. A channel that cannot be reached is
reported (never raised): an alert must not turn a finished run into a crashed one. Every text
this module produces (deliveries, errors) has the bot token, the chat id and the webhook URL (its
path and query too) replaced by `***`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

TELEGRAM_TOKEN_ENV = "QWH_TELEGRAM_BOT_TOKEN"
TELEGRAM_CHAT_ENV = "QWH_TELEGRAM_CHAT_ID"
TELEGRAM_API_BASE_ENV = "QWH_TELEGRAM_API_BASE"
WEBHOOK_URL_ENV = "QWH_ALERT_WEBHOOK_URL"
DEFAULT_TELEGRAM_API_BASE = "https://api.telegram.org"
TIMEOUT_SECONDS = 10.0
# Telegram refuses messages longer than 4096 characters.
TELEGRAM_MAX_CHARS = 4000
REDACTED = "***"


@dataclass(frozen=True)
class Alert:
    """What went wrong in a run: a one-line title and the detail lines (summary, failures)."""

    title: str
    lines: tuple[str, ...] = ()
    run_id: str | None = None
    severity: str = "error"  # "error" (a failure) or "warning" (gate violations)

    def text(self) -> str:
        return "\n".join([self.title, *self.lines])


@dataclass(frozen=True)
class Delivery:
    channel: str
    delivered: bool
    detail: str

    def describe(self) -> str:
        outcome = "delivered" if self.delivered else "NOT delivered"
        return f"alert {outcome} via {self.channel}: {self.detail}"


@dataclass(frozen=True)
class AlertSettings:
    """The channels configured in an environment (`from_env()`), with their secrets."""

    telegram_token: str | None = None
    telegram_chat_id: str | None = None
    telegram_api_base: str = DEFAULT_TELEGRAM_API_BASE
    webhook_url: str | None = None
    timeout: float = TIMEOUT_SECONDS
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertSettings:
        env = os.environ if environ is None else environ
        token = env.get(TELEGRAM_TOKEN_ENV) or None
        chat = env.get(TELEGRAM_CHAT_ENV) or None
        webhook = env.get(WEBHOOK_URL_ENV) or None
        base = (env.get(TELEGRAM_API_BASE_ENV) or DEFAULT_TELEGRAM_API_BASE).rstrip("/")
        return cls(
            telegram_token=token,
            telegram_chat_id=chat,
            telegram_api_base=base,
            webhook_url=webhook,
            secrets=tuple(s for s in (token, chat, *_url_secrets(webhook)) if s),
        )

    @property
    def telegram_configured(self) -> bool:
        return bool(self.telegram_token and self.telegram_chat_id)

    @property
    def webhook_configured(self) -> bool:
        return bool(self.webhook_url)

    def channels(self) -> list[str]:
        return [
            name
            for name, configured in (
                ("telegram", self.telegram_configured),
                ("webhook", self.webhook_configured),
            )
            if configured
        ]

    def half_configured(self) -> str | None:
        """Why Telegram is not usable although one of its two variables is set, else None."""
        if bool(self.telegram_token) != bool(self.telegram_chat_id):
            missing = TELEGRAM_CHAT_ENV if self.telegram_token else TELEGRAM_TOKEN_ENV
            return f"Telegram alerts are off: {missing} is not set"
        return None


def _url_secrets(url: str | None) -> tuple[str, ...]:
    """A webhook URL and the parts of it that may carry its secret (path, query, credentials):
    a server echoing only its path must not leak it either."""
    if not url:
        return ()
    parts = urlsplit(url)
    pieces = (parts.path if len(parts.path) > 1 else "", parts.query, parts.password or "")
    return (url, *(piece for piece in pieces if piece))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (longest first, so none is left half-replaced) as `***`."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def is_configured(settings: AlertSettings | None = None) -> bool:
    """Whether any alert channel is set up (in the environment unless `settings` are given)."""
    return bool((settings or AlertSettings.from_env()).channels())


def _post(url: str, payload: dict[str, object], timeout: float) -> str:
    """POST JSON; the answer's status line, or raise with the reason."""
    response = requests.post(url, json=payload, timeout=timeout)
    if not response.ok:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return f"HTTP {response.status_code}"


def _send_telegram(alert: Alert, settings: AlertSettings) -> str:
    url = f"{settings.telegram_api_base}/bot{settings.telegram_token}/sendMessage"
    text = alert.text()
    if len(text) > TELEGRAM_MAX_CHARS:
        text = text[: TELEGRAM_MAX_CHARS - 20] + "\n... (truncated)"
    payload: dict[str, object] = {"chat_id": settings.telegram_chat_id, "text": text}
    return _post(url, payload, settings.timeout)


def _send_webhook(alert: Alert, settings: AlertSettings) -> str:
    payload: dict[str, object] = {
        "title": alert.title,
        "severity": alert.severity,
        "run_id": alert.run_id,
        "lines": list(alert.lines),
        "text": alert.text(),
    }
    assert settings.webhook_url is not None
    return _post(settings.webhook_url, payload, settings.timeout)


SENDERS = {"telegram": _send_telegram, "webhook": _send_webhook}


def send_alert(alert: Alert, settings: AlertSettings | None = None) -> list[Delivery]:
    """Deliver `alert` to every configured channel; never raises for an unreachable channel."""
    settings = settings or AlertSettings.from_env()
    deliveries = []
    for channel in settings.channels():
        try:
            detail = SENDERS[channel](alert, settings)
            deliveries.append(Delivery(channel, True, detail))
        except (requests.RequestException, RuntimeError) as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            deliveries.append(Delivery(channel, False, redact(reason, settings.secrets)))
    return deliveries
