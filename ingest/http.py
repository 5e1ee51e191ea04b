"""A small HTTP client for data sources: timeouts, bounded retries, and rate-limit manners.

Every request has a timeout. Timeouts, dropped connections, 5xx answers and bodies that do not
decode are retried with exponential backoff and jitter, a bounded number of times. A 429 is
retried after its `Retry-After`; a 418 (the IP is banned) fails at once. Both close a gate that
all threads of the client share, so other workers wait instead of hammering the server, and
so does a used weight (`X-MBX-USED-WEIGHT-1M`) near the limit. Sessions are kept one per thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

log = logging.getLogger(__name__)

T = TypeVar("T")
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# Query parameters that may carry credentials: never written to a message.
_SECRET_PARAMS = ("signature", "apikey", "api_key", "key", "token", "secret", "password")


@dataclass(frozen=True)
class RetryPolicy:
    """How patient a client is. Tests shorten the waits; the defaults suit the real servers."""

    timeout: float = 15.0  # seconds, to connect and between bytes read
    attempts: int = 5  # tries per request, the first included
    backoff_base: float = 0.5  # first retry waits about this long, then twice as long each time
    backoff_cap: float = 30.0
    max_wait: float = 300.0  # a Retry-After or ban longer than this fails instead of waiting
    weight_limit: int = 6000  # request weight allowed per minute per IP
    weight_slowdown: float = 0.9  # at this share of the limit all workers pause
    weight_pause_cap: float = 61.0  # the pause lasts until the minute ends, at most this long


class RequestFailed(Exception):
    """A request that did not succeed; the message names the URL (credentials removed)."""


class BannedError(RequestFailed):
    """The server answered 418: this IP is banned for a while."""


class _Retry(Exception):
    """An attempt that failed in a way worth another try."""

    def __init__(self, reason: str, backs_off: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.backs_off = backs_off  # False when the shared gate already holds the wait


def redact_url(url: str) -> str:
    """The URL without user info and with credential-like query values replaced."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    query = [
        (name, "***" if name.lower() in _SECRET_PARAMS else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe=',[]"*'), ""))


class RateGate:
    """A pause shared by every thread of a client: nobody sends while it is closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_at = 0.0
        self._banned_until = 0.0

    def close_for(self, seconds: float, *, banned: bool = False) -> None:
        until = time.monotonic() + seconds
        with self._lock:
            self._open_at = max(self._open_at, until)
            if banned:
                self._banned_until = max(self._banned_until, until)

    def wait(self, max_wait: float, where: str) -> None:
        """Sleep until the gate opens; fail at once while a ban lasts longer than `max_wait`."""
        with self._lock:
            now = time.monotonic()
            if self._banned_until - now > max_wait:
                left = self._banned_until - now
                raise BannedError(
                    f"{where}: not sent, this IP is banned (HTTP 418) {left:.0f}s more"
                )
            delay = self._open_at - now
        if delay > 0:
            time.sleep(delay)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


class HttpClient:
    """GET with retries, one `requests.Session` per thread, one rate gate for all threads."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.gate = RateGate()
        self._local = threading.local()
        self._random = random.Random()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        """The decoded JSON body; RequestFailed once retries are spent."""
        return self._request("GET", url, params, decode=lambda response: response.json())

    def get_bytes(self, url: str) -> bytes | None:
        """The body, or None when the server says 404 (not there)."""
        return self._request("GET", url, None, decode=lambda r: r.content, missing_ok=True)

    def get_text(self, url: str) -> str | None:
        """The body as text, or None when the server says 404 (not there)."""
        return self._request("GET", url, None, decode=lambda r: r.text, missing_ok=True)

    def exists(self, url: str) -> bool:
        """Whether a HEAD request finds the resource (404 means no)."""
        return self._request("HEAD", url, None, decode=lambda r: True, missing_ok=True) is True

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based): exponential, capped, with jitter."""
        ceiling = min(self.policy.backoff_cap, self.policy.backoff_base * 2 ** (retry - 1))
        return ceiling * self._random.uniform(0.5, 1.0)

    def _request(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        *,
        decode: Callable[[requests.Response], T],
        missing_ok: bool = False,
    ) -> T | None:
        where = f"{method} {redact_url(requests.Request(method, url, params=params).prepare().url)}"
        attempts = self.policy.attempts
        for attempt in range(1, attempts + 1):
            self.gate.wait(self.policy.max_wait, where)
            try:
                return self._attempt(where, method, url, params, decode, missing_ok)
            except _Retry as retry:
                problem = retry.reason
                if attempt == attempts:
                    break
                delay = self.backoff(attempt) if retry.backs_off else 0.0
                log.warning("%s: %s; retry %d/%d in %.2fs", where, problem, attempt,
                            attempts - 1, delay)  # fmt: skip
                time.sleep(delay)
        raise RequestFailed(f"{where}: {problem}, after {attempts} attempts")

    def _attempt(
        self,
        where: str,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        decode: Callable[[requests.Response], T],
        missing_ok: bool,
    ) -> T | None:
        try:
            response = self._session().request(
                method, url, params=params, timeout=self.policy.timeout
            )
        except requests.Timeout:
            raise _Retry(f"no answer within {self.policy.timeout}s") from None
        except requests.RequestException as exc:
            raise _Retry(f"connection failed ({type(exc).__name__})") from None
        self._watch_weight(response)
        self._check_status(where, response)
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise RequestFailed(f"{where}: HTTP {response.status_code} {response.text[:200]}")
        try:
            return decode(response)
        except (ValueError, requests.RequestException) as exc:
            raise _Retry(f"unreadable body ({type(exc).__name__}: {str(exc)[:120]})") from None

    def _check_status(self, where: str, response: requests.Response) -> None:
        """Raise `_Retry` for answers worth another try, BannedError on 418."""
        status = response.status_code
        if status == 418:
            ban = _retry_after(response)
            self.gate.close_for(ban if ban is not None else self.policy.max_wait, banned=True)
            until = f" for {ban:.0f}s" if ban is not None else ""
            raise BannedError(f"{where}: HTTP 418, this IP is banned by the server{until}")
        if status == 429:
            wait = _retry_after(response)
            if wait is not None and wait > self.policy.max_wait:
                raise RequestFailed(f"{where}: HTTP 429 with Retry-After {wait:.0f}s, too long")
            wait = wait if wait is not None else self.backoff(1)
            self.gate.close_for(wait)
            raise _Retry(f"HTTP 429 (rate limit), every worker waits {wait:.1f}s", False)
        if status >= 500:
            raise _Retry(f"HTTP {status}")

    def _watch_weight(self, response: requests.Response) -> None:
        """Near the per-minute weight limit, pause every worker until the minute ends."""
        try:
            used = int(response.headers.get(USED_WEIGHT_HEADER, ""))
        except ValueError:
            return
        if used >= self.policy.weight_slowdown * self.policy.weight_limit:
            # The window resets each minute of the server's clock; a second more covers skew.
            pause = min(60.0 - time.time() % 60.0 + 1.0, self.policy.weight_pause_cap)
            log.info("used weight %d of %d: pausing %.1fs", used, self.policy.weight_limit, pause)
            self.gate.close_for(pause)
