"""The Factory API over `requests`: certs GET/POST/PATCH and users/self.

Errors are rendered the way fioctl renders them:
    HTTP error during POST 'https://.../certs/': 409 Conflict
    = <msg>
     * <error>
Read-only requests retry transient failures with backoff; POST and PATCH never retry.
The token goes out in one header and nowhere else: not in logs, errors or reprs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from fioca.config import Settings
from fioca.errors import ApiError

# Connect, read. Long enough for a busy server, short enough that nobody waits on a dead one.
TIMEOUT = (10, 60)
# A certs answer is a few KiB; anything near this is not a certs answer.
MAX_BODY = 4 * 1024 * 1024

NOT_CONFIGURED = "Factory PKI is not configured. Please, see `fioctl keys ca create`."


@dataclass(frozen=True)
class Response:
    status: int
    body: Any  # parsed JSON
    raw: bytes


def render_http_error(method: str, url: str, resp: requests.Response) -> ApiError:
    status_line = f"{resp.status_code} {resp.reason or ''}".strip()
    details: list[str] = []
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        msg = body.get("msg") or body.get("message")
        errors = body.get("errors")
        if msg:
            details.append(f"= {msg}")
        if isinstance(errors, list):
            details.extend(f" * {err}" for err in errors)
        elif isinstance(errors, dict):
            details.extend(f" * {name}: {err}" for name, err in errors.items())
    return ApiError(f"HTTP error during {method} '{url}': {status_line}", status=resp.status_code, details=details)


class FactoryApi:
    """One factory's API: `FactoryApi(settings).get_certs()`."""

    def __init__(self, settings: Settings, *, log: Callable[[str], None] | None = None):
        self.factory = settings.require_factory()
        token = settings.require_token()
        self.base = settings.server_url
        self._log = log if settings.verbose and log else (lambda _line: None)
        self._session = requests.Session()
        self._session.headers[settings.token_header] = token
        self._session.headers["User-Agent"] = "fioca"
        # Passed on every request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
        self._verify: bool | str = True
        if settings.insecure_skip_verify:
            self._verify = False
        elif settings.cacert:
            self._verify = str(settings.cacert)
        # Only idempotent reads are retried; a POST makes keys and a PATCH sets the root.
        retry = Retry(
            total=3,
            backoff_factor=0.3,
            allowed_methods=frozenset({"GET", "HEAD"}),
            status_forcelist=(429, 502, 503, 504),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def url(self, path: str) -> str:
        return f"{self.base}/ota/factories/{self.factory}/{path}"

    @property
    def certs_url(self) -> str:
        return self.url("certs/")

    def _request(self, method: str, url: str, body: dict | None = None, ok: tuple[int, ...] = (200,)) -> Response:
        self._log(f"{method} {url}")
        try:
            resp = self._session.request(
                method,
                url,
                json=body,
                timeout=TIMEOUT,
                verify=self._verify,
                allow_redirects=False,  # a redirect would carry the token to wherever it points
            )
        except requests.exceptions.SSLError as exc:
            raise ApiError(f"TLS error during {method} '{url}': {_reason(exc)}") from None
        except requests.exceptions.Timeout:
            raise ApiError(f"timed out during {method} '{url}'") from None
        except requests.exceptions.ConnectionError as exc:
            raise ApiError(f"cannot reach the server during {method} '{url}': {_reason(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise ApiError(f"request failed during {method} '{url}': {exc.__class__.__name__}") from None
        self._log(f"{method} {url} -> {resp.status_code}")
        if resp.status_code not in ok:
            if 300 <= resp.status_code < 400:
                where = resp.headers.get("Location", "?")
                raise ApiError(
                    f"HTTP error during {method} '{url}': {resp.status_code} redirect to {where} refused",
                    status=resp.status_code,
                )
            raise render_http_error(method, url, resp)
        raw = resp.content
        if len(raw) > MAX_BODY:
            raise ApiError(f"answer to {method} '{url}' is {len(raw)} bytes, too large to be a certs answer")
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise ApiError(f"answer to {method} '{url}' is not JSON") from None
        return Response(resp.status_code, parsed, raw)

    def get_certs(self) -> Response:
        """GET certs/. 206 (or 200 with a null root) means the factory PKI is not configured."""
        resp = self._request("GET", self.certs_url, ok=(200, 206))
        _require_object(resp, "GET", self.certs_url)
        return resp

    def post_certs(self, body: dict) -> Response:
        resp = self._request("POST", self.certs_url, body, ok=(200, 201))
        _require_object(resp, "POST", self.certs_url)
        return resp

    def patch_certs(self, body: dict) -> Response:
        return self._request("PATCH", self.certs_url, body, ok=(200, 201, 202, 204))

    def users_self(self) -> dict:
        url = self.url("users/self/")
        resp = self._request("GET", url)
        _require_object(resp, "GET", url)
        if not isinstance(resp.body.get("polis-id"), (str, int)):
            raise ApiError(f"answer to GET '{url}' has no polis-id")
        return resp.body


def is_configured(certs: Response) -> bool:
    return certs.status != 206 and bool(certs.body.get("root-crt"))


def _require_object(resp: Response, method: str, url: str) -> None:
    if not isinstance(resp.body, dict):
        raise ApiError(f"answer to {method} '{url}' is not a JSON object")


def _reason(exc: Exception) -> str:
    """The innermost cause's class and text, without URLs that could carry query secrets."""
    inner = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__
    text = getattr(inner, "reason", None) or getattr(inner, "strerror", None) or str(inner) or inner.__class__.__name__
    return str(text).split(" (Caused by")[0][:200]
