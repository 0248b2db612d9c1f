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
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from fioca.config import Settings
from fioca.errors import ApiError, ConfigError

# A certs answer is a few KiB; anything near this is not a certs answer.
MAX_BODY = 4 * 1024 * 1024
# The certs fields that hold PEM text (or null).
CERT_FIELDS = ("root-crt", "ca-crt", "tls-crt", "est-tls-crt")

NOT_CONFIGURED = "Factory PKI is not configured. Please, see `fioctl keys ca create`."


@dataclass(frozen=True)
class Response:
    status: int
    body: Any  # parsed JSON
    raw: bytes


def render_http_error(method: str, url: str, resp: requests.Response, raw: bytes | None = None) -> ApiError:
    """fioctl's rendering; `raw` is the body already read (a streamed response has no .json())."""
    status_line = f"{resp.status_code} {resp.reason or ''}".strip()
    details: list[str] = []
    try:
        body = json.loads(raw) if raw is not None else resp.json()
    except (ValueError, UnicodeDecodeError):
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
        # Connect, read: long enough for a busy server, short enough that nobody waits on a dead one.
        self._timeout = (min(10.0, settings.http_timeout), settings.http_timeout)
        self._log = log if settings.verbose and log else (lambda _line: None)
        self._session = requests.Session()
        self._session.headers[settings.token_header] = token
        self._session.headers["User-Agent"] = "fioca"
        # Passed on every request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
        self._verify: bool | str = True
        if settings.insecure_skip_verify:
            self._verify = False
        elif settings.cacert:
            _check_ca_bundle(settings.cacert)
            self._verify = str(settings.cacert)
        # Only idempotent reads are retried; a POST makes keys and a PATCH sets the root.
        retry = Retry(
            total=3,
            backoff_factor=0.3,
            allowed_methods=frozenset({"GET", "HEAD"}),
            status_forcelist=(429, 502, 503, 504),
            respect_retry_after_header=False,  # a Retry-After of a day must not hang fioca; back off ourselves
            raise_on_status=False,
            other=0,  # a certificate that fails to verify (an SSLError) will not verify on a retry
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
                timeout=self._timeout,
                verify=self._verify,
                allow_redirects=False,  # a redirect would carry the token to wherever it points
                stream=True,  # the body is read below, with a size cap
            )
            try:
                raw = _read_capped(resp, f"answer to {method} '{url}'")
            finally:
                resp.close()
        except requests.exceptions.SSLError as exc:
            raise ApiError(f"TLS error during {method} '{url}': {_reason(exc)}") from None
        except requests.exceptions.Timeout:
            raise ApiError(f"timed out during {method} '{url}'") from None
        except requests.exceptions.ConnectionError as exc:
            raise ApiError(f"cannot reach the server during {method} '{url}': {_reason(exc)}") from None
        except requests.exceptions.ChunkedEncodingError:
            raise ApiError(
                f"answer to {method} '{url}' was cut off: the connection closed before the end of the body"
            ) from None
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
            raise render_http_error(method, url, resp, raw)
        try:
            parsed = json.loads(raw) if raw.strip() else {}
            # A lone "\udXXX" escape parses, but cannot be saved or handed on as UTF-8 text.
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(f"answer to {method} '{url}' holds a \\u escape that is not valid Unicode") from None
        except (ValueError, UnicodeDecodeError):
            raise ApiError(f"answer to {method} '{url}' is not JSON") from None
        return Response(resp.status_code, parsed, raw)

    def get_certs(self) -> Response:
        """GET certs/. 206 (or 200 with a null root) means the factory PKI is not configured."""
        resp = self._request("GET", self.certs_url, ok=(200, 206))
        _require_object(resp, "GET", self.certs_url)
        for name in CERT_FIELDS:
            # A number or a list here would read as "configured" and be passed on as PEM.
            if resp.body.get(name) is not None and not isinstance(resp.body[name], str):
                raise ApiError(
                    f"answer to GET '{self.certs_url}' is malformed: {name} is not a string "
                    f"(got {type(resp.body[name]).__name__})"
                )
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


def _read_capped(resp: requests.Response, what: str) -> bytes:
    """The body, refused once it passes MAX_BODY: a huge answer is never read whole."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(f"{what} is {declared} bytes, too large to be a certs answer")
    body = bytearray()
    for chunk in resp.iter_content(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(f"{what} is over {MAX_BODY} bytes, too large to be a certs answer")
    return bytes(body)


def _check_ca_bundle(path: Path) -> None:
    """A CA bundle must hold a certificate, or every request fails with an obscure TLS error."""
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError):
        raise ConfigError(
            f"CA bundle {path} (CACERT / server.cacert) holds no usable PEM certificate"
        ) from None


def _require_object(resp: Response, method: str, url: str) -> None:
    if not isinstance(resp.body, dict):
        raise ApiError(f"answer to {method} '{url}' is not a JSON object")


def _reason(exc: Exception) -> str:
    """The innermost cause's class and text, without URLs that could carry query secrets."""
    inner = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__
    if getattr(inner, "verify_message", None):
        # ssl's reason is only CERTIFICATE_VERIFY_FAILED; the verify message says why.
        return f"certificate verify failed: {inner.verify_message}"
    text = getattr(inner, "reason", None) or getattr(inner, "strerror", None) or str(inner) or inner.__class__.__name__
    return str(text).split(" (Caused by")[0][:200]
