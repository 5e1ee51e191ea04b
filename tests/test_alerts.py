"""Alerts (quantwarehouse/alerts.py) delivered over real HTTP to a server on 127.0.0.1: Telegram's
sendMessage and a webhook, what is configured when, failures reported and never raised, and no
secret in any text the module returns."""

from __future__ import annotations

import socket

from quantwarehouse.alerts import (
    Alert,
    AlertSettings,
    is_configured,
    redact,
    send_alert,
)
from tests.alert_server import CHAT, TOKEN, AlertServer


def settings_for(
    server: AlertServer, *, telegram: bool = True, webhook: bool = True
) -> AlertSettings:
    env = {}
    if telegram:
        env |= {
            "QWH_TELEGRAM_BOT_TOKEN": TOKEN,
            "QWH_TELEGRAM_CHAT_ID": CHAT,
            "QWH_TELEGRAM_API_BASE": server.base + "/",
        }
    if webhook:
        env["QWH_ALERT_WEBHOOK_URL"] = f"{server.base}/hooks/{TOKEN[-6:]}"
    return AlertSettings.from_env(env)


ALERT = Alert("daily-refresh r1 failed", ("step 'build bars' failed: boom",), run_id="r1")


def test_nothing_configured_and_half_configured_telegram():
    assert not is_configured(AlertSettings.from_env({}))
    half = AlertSettings.from_env({"QWH_TELEGRAM_BOT_TOKEN": TOKEN})
    assert not is_configured(half)
    assert half.half_configured() == "Telegram alerts are off: QWH_TELEGRAM_CHAT_ID is not set"
    assert send_alert(ALERT, half) == []
    assert is_configured(AlertSettings.from_env({"QWH_ALERT_WEBHOOK_URL": "http://x"}))


def test_alert_reaches_telegram_and_webhook(alert_server):
    settings = settings_for(alert_server)
    deliveries = send_alert(ALERT, settings)
    assert [(d.channel, d.delivered) for d in deliveries] == [
        ("telegram", True),
        ("webhook", True),
    ]
    telegram, webhook = alert_server.received
    assert telegram.path == f"/bot{TOKEN}/sendMessage"
    assert telegram.body == {
        "chat_id": CHAT,
        "text": "daily-refresh r1 failed\nstep 'build bars' failed: boom",
    }
    assert webhook.path == f"/hooks/{TOKEN[-6:]}"
    assert webhook.body["run_id"] == "r1"
    assert webhook.body["lines"] == ["step 'build bars' failed: boom"]
    assert webhook.body["severity"] == "error"


def test_long_telegram_messages_are_cut_to_the_api_limit(alert_server):
    settings = settings_for(alert_server, webhook=False)
    long_alert = Alert("title", tuple(f"line {i}" for i in range(2000)))
    assert send_alert(long_alert, settings)[0].delivered
    text = alert_server.received[0].body["text"]
    assert len(text) <= 4000 and text.endswith("... (truncated)")


def test_a_refused_alert_is_reported_without_secrets(alert_server):
    alert_server.status = 500
    alert_server.echo_path = True  # the answer's body holds the token, as some proxies do
    deliveries = send_alert(ALERT, settings_for(alert_server))
    assert [d.delivered for d in deliveries] == [False, False]
    for delivery in deliveries:
        text = delivery.describe()
        assert "HTTP 500" in text
        assert TOKEN not in text and TOKEN[-6:] not in text and CHAT not in text


def test_an_unreachable_channel_is_reported_without_secrets():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = AlertSettings.from_env(
        {
            "QWH_TELEGRAM_BOT_TOKEN": TOKEN,
            "QWH_TELEGRAM_CHAT_ID": CHAT,
            "QWH_TELEGRAM_API_BASE": f"http://127.0.0.1:{port}",
            "QWH_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook?key={TOKEN}",
        }
    )
    deliveries = send_alert(ALERT, settings)
    assert [d.delivered for d in deliveries] == [False, False]
    for delivery in deliveries:
        assert "ConnectionError" in delivery.detail
        assert TOKEN not in delivery.detail and CHAT not in delivery.detail


def test_redact_replaces_longest_secrets_first():
    assert redact("a abc ab", ["ab", "abc"]) == "a *** ***"
