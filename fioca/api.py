"""The Factory API over `requests`: certs GET/POST/PATCH, users, the deny-list, device
registration, and the OAuth token refresh; and the device gateway's and EST server's mTLS
requests as a device (`device_request`, `device_get`). The only module of fioca that speaks
HTTP to a server.

Errors are rendered the way fioctl renders them:
    HTTP error during POST 'https://.../certs/': 409 Conflict
    = <msg>
     * <error>
then, where there is one, a line that says what to do (a 401 names where the token came from;
a refused connection to a loopback server suggests `fioca sandbox serve`; a TLS failure
mentions CACERT). Every request has a total deadline (FIOCA_HTTP_TIMEOUT): a server that
trickles its answer a byte at a time is cut off then, not after one read timeout per byte.
Read-only requests retry transient failures with backoff; POST and PATCH never retry. The
token goes out in one header and nowhere else: not in logs, errors or reprs, and a token a
server echoes back in an error body is masked.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from fioca import facts, http_trust
from fioca.config import (
    DEFAULT_OAUTH_URL,
    ClientCredentials,
    Settings,
    save_client_credentials,
)
from fioca.errors import ApiError, ConfigError
from fioca.text import quote_path

# A certs answer is a few KiB; anything near this is not a certs answer.
MAX_BODY = 4 * 1024 * 1024
# fioctl shows a body without msg/message only when it is this short.
PRINT_LIMIT = 512
# The certs fields that hold PEM text (or null).
CERT_FIELDS = facts.CERT_FIELDS
SANDBOX_INFO_FILE = facts.SANDBOX_INFO_FILE
DEVICES_PATH = "/ota/devices/"  # what `fioca sandbox serve` writes beside its fioctl.yaml
MASK = "********"

NOT_CONFIGURED = "Factory PKI is not configured. Please, see `fioca keys ca create`."
NOT_CONFIGURED_HINT = "  `fioca keys ca create PKI_DIR --dry-run` shows what it will do before it does anything"


@dataclass(frozen=True)
class Response:
    """An API answer: its status, its JSON and the bytes it came as."""

    status: int
    body: Any  # parsed JSON
    raw: bytes


# --- The total deadline ---------------------------------------------------------------------------


class _Deadline:
    """Shuts the connections of one request down when its time is up, wherever it waits.

    A per-read timeout restarts with every byte; this does not. The connection classes below
    register each socket they open (or reuse) with the deadline of the request running in
    their thread. The deadline keeps a duplicate of each socket (TLS takes the original's file
    descriptor over): shutting a duplicate down ends the connection, and so wakes a read
    blocked on it in any thread.
    """

    _current = threading.local()

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _Deadline._current.value = self
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        _Deadline._current.value = None
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    @classmethod
    def watch(cls, sock: socket.socket) -> None:
        deadline = getattr(cls._current, "value", None)
        if deadline is not None:
            deadline._add(sock)

    def _add(self, sock: socket.socket) -> None:
        try:
            duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except OSError:
            return
        with self._lock:
            self._sockets.append(duplicate)
            if self.expired:  # a retry after the deadline: no new wait
                _shut(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv in the other thread
    except OSError:
        pass


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _Deadline.watch(sock)
        return sock


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _Deadline.watch(sock)  # the TCP connection, so a stalled TLS handshake is cut too
        return sock


class _WatchedPool:
    """A connection taken from the pool for reuse is watched too (its socket is not new)."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        if getattr(conn, "sock", None) is not None:
            _Deadline.watch(conn.sock)
        return conn


class _WatchedHTTPPool(_WatchedPool, HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_WatchedPool, HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Adapter(HTTPAdapter):
    """Watched connections, and TLS that trusts the system's CAs plus CACERT (as fioctl)."""

    def __init__(self, ssl_context: ssl.SSLContext | None, **kwargs: Any):
        self._ssl_context = ssl_context
        super().__init__(**kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)
        if self._ssl_context is not None and conn.ca_certs == http_trust.certifi_bundle():
            # The context holds certifi's bundle already: urllib3 would parse it again for
            # every new connection (~17 ms each), to the same trust.
            conn.ca_certs = None

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        if self._ssl_context is not None:
            pool_kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # Through a proxy (HTTPS_PROXY) too: the same trust and the same watched connections.
        if self._ssl_context is not None:
            proxy_kwargs.setdefault("ssl_context", self._ssl_context)
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
        return manager


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The system's trusted CAs and certifi's, plus CACERT / server.cacert (fioca.http_trust).
    None when verification is off."""
    if settings.insecure_skip_verify:
        return None
    return http_trust.client_context(settings.cacert)


# --- Rendering errors -------------------------------------------------------------------------------


def render_http_error(
    method: str, url: str, status: int, reason: str, raw: bytes, *, mask: Callable[[str], str] = str
) -> ApiError:
    """fioctl's rendering: the status line, then `= msg` and ` * error` lines, or the short body."""
    status_line = f"{status} {reason or ''}".strip()
    details: list[str] = []
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    message = body.get("msg") or body.get("message") if isinstance(body, dict) else None
    if message:
        details.append(f"= {mask(str(message))}")
        errors = body.get("errors")
        if isinstance(errors, list):
            details.extend(f" * {mask(str(err))}" for err in errors)
        elif isinstance(errors, dict):
            details.extend(f" * {mask(str(name))}: {mask(str(err))}" for name, err in errors.items())
    elif raw.strip():
        if len(raw) < PRINT_LIMIT:
            details.append(f"= {mask(raw.decode('utf-8', errors='replace'))}")
        else:
            details.append("= Error body too long, try to use the --verbose option")
    return ApiError(f"HTTP error during {method} '{url}': {status_line}", status=status, details=details)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- The client ------------------------------------------------------------------------------------


class HttpClient:
    """What every fioca API client shares: the session, TLS, proxy, deadline, auth and errors."""

    def __init__(self, settings: Settings, *, log: Callable[[str], None] | None = None):
        self.settings = settings
        self.base = settings.server_url
        self._timeout = (min(10.0, settings.http_timeout), settings.http_timeout)  # connect, each read
        self._log = log if settings.verbose and log else (lambda _line: None)
        self._secrets: list[str] = []
        self._auth_headers: dict[str, str] = {}
        self._session = requests.Session()
        # The environment is read in fioca.config only (REQUESTS_CA_BUNDLE would otherwise
        # replace the trust store, and a proxy variable would be read behind our back).
        self._session.trust_env = False
        self._session.headers["User-Agent"] = "fioca"
        if settings.proxy:
            self._session.proxies = {"http": settings.proxy, "https": settings.proxy}
        self._verify = not settings.insecure_skip_verify
        # Only idempotent reads are retried; a POST makes keys and a PATCH sets the root.
        retry = Retry(
            total=3,
            connect=1,  # a refused connection is a stopped server: one retry, no long backoff
            backoff_factor=0.3,
            allowed_methods=frozenset({"GET", "HEAD"}),
            status_forcelist=(429, 502, 503, 504),
            respect_retry_after_header=False,  # a Retry-After of a day must not hang fioca; back off ourselves
            raise_on_status=False,
            other=0,  # a certificate that fails to verify (an SSLError) will not verify on a retry
        )
        adapter = _Adapter(_ssl_context(settings), max_retries=retry)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    # -- authentication

    def use_token_header(self) -> None:
        """The token in TOKEN_HEADER, or the OAuth access token as a Bearer (refreshed first)."""
        settings = self.settings
        settings.require_auth()
        if settings.token:
            self._secrets.append(settings.token)
            self._auth_headers = {settings.token_header: settings.token}
            return
        credentials = fresh_client_credentials(self, settings.client_credentials)
        bearer = base64.b64encode(credentials.access_token.encode()).decode()  # as fioctl sends it
        self._secrets += [credentials.access_token, bearer]
        self._auth_headers = {"Authorization": f"Bearer {bearer}"}

    @property
    def auth_source(self) -> str:
        """Where the credentials sent came from, for a 401's message (never the secret)."""
        return self.settings.auth_source

    def mask(self, text: str) -> str:
        """`text` with every secret this client holds replaced (a server may echo a token back)."""
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, MASK)
        return text

    # -- requests

    def request(
        self,
        method: str,
        url: str,
        body: dict | None = None,
        ok: tuple[int, ...] = (200,),
        *,
        form: dict[str, str] | None = None,
        authenticated: bool = True,
    ) -> Response:
        self._log(f"{method} {url}")
        with _Deadline(self.settings.http_timeout) as deadline:
            try:
                status, reason, headers, raw = self._send(method, url, body, form, authenticated)
            except requests.exceptions.RequestException as exc:
                if deadline.expired:
                    raise self._timed_out(method, url) from None
                raise self._transport_error(method, url, exc) from None
            except ApiError:
                if deadline.expired:
                    raise self._timed_out(method, url) from None
                raise
        self._log(f"{method} {url} -> {status}")
        if status not in ok:
            raise self._status_error(method, url, status, reason, headers, raw)
        return Response(status, _parse_json(raw, method, url), raw)

    def _send(
        self, method: str, url: str, body: dict | None, form: dict[str, str] | None, authenticated: bool
    ) -> tuple[int, str, Any, bytes]:
        headers = dict(self._auth_headers) if authenticated else {}
        resp = self._session.request(
            method,
            url,
            json=body,
            data=form,
            headers=headers,
            timeout=self._timeout,
            verify=self._verify,
            allow_redirects=False,  # a redirect would carry the token to wherever it points
            stream=True,  # the body is read below, with a size cap
            proxies=None if self._bypass_proxy(url) else self._session.proxies,
        )
        try:
            raw = _read_capped(resp, f"answer to {method} '{url}'")
        finally:
            resp.close()
        return resp.status_code, resp.reason or "", resp.headers, raw

    def _bypass_proxy(self, url: str) -> bool:
        if not self.settings.proxy:
            return True
        host = urlsplit(url).hostname or ""
        return bool(self.settings.no_proxy) and bool(
            urllib.request.proxy_bypass_environment(host, {"no": self.settings.no_proxy})
        )

    # -- errors with a way forward

    def _timed_out(self, method: str, url: str) -> ApiError:
        return ApiError(
            f"timed out during {method} '{url}': no complete answer within {self.settings.http_timeout:g} s",
            details=["  the server is slow or stalled; try again, or allow more time with FIOCA_HTTP_TIMEOUT=SECONDS"],
        )

    def _transport_error(self, method: str, url: str, exc: Exception) -> ApiError:
        if isinstance(exc, requests.exceptions.SSLError):
            reason = _reason(exc)
            hint = [
                "  if the server's certificate comes from a private CA, name its bundle in CACERT "
                f"(or server.cacert in {self.settings.config_path}); fioca adds it to the system's CAs"
            ]
            return ApiError(f"TLS error during {method} '{url}': {reason}", details=hint if "verify" in reason else [])
        if isinstance(exc, requests.exceptions.Timeout):
            return self._timed_out(method, url)
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return ApiError(f"answer to {method} '{url}' was cut off: the connection closed before the end of the body")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return ApiError(f"cannot reach the server during {method} '{url}': {_reason(exc)}", details=self._unreachable_hint(url))
        return ApiError(f"request failed during {method} '{url}': {exc.__class__.__name__}")

    def _unreachable_hint(self, url: str) -> list[str]:
        if not _is_loopback(url):
            return []
        data_dir = self.settings.config_path.parent
        if (data_dir / SANDBOX_INFO_FILE).is_file():
            return [f"  is the sandbox running? Start it with `fioca sandbox serve --data {quote_path(data_dir)}`"]
        return ["  nothing listens there; if it is a fioca sandbox, start it with `fioca sandbox serve --data DIR`"]

    def _status_error(self, method: str, url: str, status: int, reason: str, headers: Any, raw: bytes) -> ApiError:
        if 300 <= status < 400:
            where = self.mask(str(headers.get("Location", "?")))
            return ApiError(f"HTTP error during {method} '{url}': {status} redirect to {where} refused", status=status)
        error = render_http_error(method, url, status, reason, raw, mask=self.mask)
        if status in (401, 403) and self._auth_headers:
            header = next(iter(self._auth_headers))
            error.details.append(
                f"  the server did not accept the credentials from {self.auth_source} "
                f"(sent as {header}); check them, or run `fioctl login` again"
            )
        return error


class FactoryApi(HttpClient):
    """One factory's API: `FactoryApi(settings).get_certs()`."""

    def __init__(self, settings: Settings, *, log: Callable[[str], None] | None = None):
        settings.require_auth()  # fioctl asks for a login before it asks for a factory
        self.factory = settings.require_factory()
        super().__init__(settings, log=log)
        self.use_token_header()

    def url(self, path: str) -> str:
        return f"{self.base}/ota/factories/{self.factory}/{path}"

    @property
    def certs_url(self) -> str:
        return self.url("certs/")

    def _request(self, method: str, url: str, body: dict | None = None, ok: tuple[int, ...] = (200,)) -> Response:
        return self.request(method, url, body, ok)

    def get_certs(self) -> Response:
        """GET certs/. 206 (or 200 with a null root) means the factory PKI is not configured."""
        resp = self.request("GET", self.certs_url, ok=(200, 206))
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
        # fioctl accepts every "normal" success: 200, 201, 202, 204.
        resp = self.request("POST", self.certs_url, body, ok=(200, 201, 202, 204))
        _require_object(resp, "POST", self.certs_url)
        return resp

    def patch_certs(self, body: dict) -> Response:
        return self.request("PATCH", self.certs_url, body, ok=(200, 201, 202, 204))

    def users(self) -> list:
        """GET users/: the factory's users (`polis-id`, `name`, `role`), as fioctl's owner column reads them."""
        url = self.url("users/")
        resp = self.request("GET", url)
        if not isinstance(resp.body, list):
            raise ApiError(f"answer to GET '{url}' is not a JSON list")
        return resp.body

    def denied_devices(self, *, page: int, limit: int) -> dict:
        """GET denied-devices/ (`devices`, `total`, `next`), one page as fioctl asks for it."""
        url = self.url(f"denied-devices/?limit={limit}&page={page}")
        resp = self.request("GET", url)
        _require_object(resp, "GET", url)
        if not isinstance(resp.body.get("devices"), list):
            raise ApiError(f"answer to GET '{url}' has no list of devices")
        return resp.body

    def delete_denied(self, uuid: str) -> None:
        """DELETE denied-devices/<uuid>/: the uuid leaves the deny-list and may be used again."""
        self.request("DELETE", self.url(f"denied-devices/{quote(uuid, safe='')}/"), ok=(200, 202, 204))

    def users_self(self) -> dict:
        url = self.url("users/self/")
        resp = self.request("GET", url)
        _require_object(resp, "GET", url)
        if not isinstance(resp.body.get("polis-id"), (str, int)):
            raise ApiError(f"answer to GET '{url}' has no polis-id")
        return resp.body


class DeviceRegistrationApi(HttpClient):
    """lmp-device-register's endpoints: `DEVICE_API` when set (a factory-registration-ref
    server is e.g. http://host/sign), else the API's /ota/devices/; OAuth (OAUTH_BASE, else
    https://app.foundries.io/oauth) for the device flow. The factory (the CSR's OU, the OAuth
    scope) is the caller's, else DEVICE_FACTORY's, else the settings'.

    Credentials: the settings' token (in TOKEN_HEADER) when there is one; `use_token` and
    `use_access_token` set others. No credential at all is fine until the POST: the device
    flow gets one."""

    def __init__(self, settings: Settings, *, factory: str | None = None, log: Callable[[str], None] | None = None):
        self.factory = factory if factory is not None else settings.device_factory or settings.require_factory()
        super().__init__(settings, log=log)
        self._source: str | None = None
        self.devices_url = settings.device_api or f"{self.base}{DEVICES_PATH}"
        self.oauth_url = (settings.device_oauth_url or DEFAULT_OAUTH_URL).rstrip("/")
        if settings.token:
            self.use_token(settings.token_header, settings.token)

    # -- credentials

    def use_token(self, header: str, token: str, source: str | None = None) -> None:
        """The API token, verbatim, in `header` (lmp-device-register's -T and -H)."""
        self._secrets.append(token)
        self._auth_headers = {header: token}
        self._source = source

    def use_access_token(self, access_token: str) -> None:
        """An OAuth access token as lmp-device-register sends it: `Bearer base64(token)`."""
        bearer = base64.b64encode(access_token.encode()).decode()
        self._secrets += [access_token, bearer]
        self._auth_headers = {"Authorization": f"Bearer {bearer}"}
        self._source = "the OAuth device flow"

    @property
    def auth_source(self) -> str:
        return self._source or self.settings.auth_source

    @property
    def authenticated(self) -> bool:
        return bool(self._auth_headers)

    # -- registration

    def probe(self) -> int:
        """HEAD without a token first, as lmp-device-register does: below 500 means "it is there"."""
        return self.request("HEAD", self.devices_url, ok=tuple(range(100, 500)), authenticated=False).status

    def create(self, body: dict[str, Any]) -> Response:
        """POST the registration; only 201 is success."""
        resp = self.request("POST", self.devices_url, body, ok=(201,))
        _require_object(resp, "POST", self.devices_url)
        return resp

    # -- taking a registration back (the API's device calls, as fioctl makes them)

    @property
    def can_delete(self) -> bool:
        """Only the API's /ota/devices/ has device calls; a registration server's /sign has none."""
        return self.devices_url.endswith(DEVICES_PATH)

    def device_url(self, uuid: str) -> str:
        return f"{self.devices_url}{quote(uuid, safe='')}/?factory={quote(self.factory, safe='')}&by-uuid=1"

    def denied_device_url(self, uuid: str) -> str:
        root = self.devices_url[: -len(DEVICES_PATH)]
        return f"{root}/ota/factories/{quote(self.factory, safe='')}/denied-devices/{quote(uuid, safe='')}/"

    def get_device(self, uuid: str) -> dict | None:
        """The device with this uuid, None when the API has none."""
        resp = self.request("GET", self.device_url(uuid), ok=(200, 404))
        return resp.body if resp.status == 200 and isinstance(resp.body, dict) else None

    def delete_device(self, uuid: str) -> None:
        """DELETE the device (the API deny-lists its uuid), then clear the uuid from the
        deny-list, so the uuid may register again."""
        self.request("DELETE", self.device_url(uuid), ok=(200, 202, 204))
        self.request("DELETE", self.denied_device_url(uuid), ok=(200, 202, 204, 404))

    # -- the OAuth device flow (RFC 8628), as lmp-device-register speaks it

    def authorize_device(self, client_id: str, scope: str) -> dict[str, Any]:
        """POST <oauth>/authorization/device/: a device code, a user code and where to enter it."""
        url = f"{self.oauth_url}/authorization/device/"
        resp = self.request("POST", url, form={"client_id": client_id, "scope": scope}, authenticated=False)
        _require_object(resp, "POST", url)
        for name in ("device_code", "user_code", "verification_uri"):
            if not isinstance(resp.body.get(name), str) or not resp.body[name]:
                raise ApiError(f"answer to POST '{url}' has no {name}")
        return resp.body

    def device_token(self, form: dict[str, str]) -> Response:
        """POST <oauth>/token/ once: 200 with the access token, or 400 with the RFC's `error`
        (authorization_pending, slow_down, ...); other answers raise ApiError."""
        url = f"{self.oauth_url}/token/"
        resp = self.request("POST", url, ok=(200, 400), form=form, authenticated=False)
        _require_object(resp, "POST", url)
        if resp.status == 200:
            token = resp.body.get("access_token")
            if not isinstance(token, str) or not token:
                raise ApiError(f"answer to POST '{url}' has no access_token")
            self._secrets.append(token)
        return resp


# --- The device gateway, as a device (fioca device check) --------------------------------------------


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address` with SNI, certificate name check and Host header for `self.host`."""

    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext, timeout: float):
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address
        self._tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        # As http.client's own connect(): without it the request waits behind the handshake's
        # last segment for the server's delayed ACK (about 40 ms a request).
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _Deadline.watch(raw)
        try:
            self.sock = self._tls_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


@dataclass(frozen=True)
class DeviceAnswer:
    """The answer to one request made as a device: status line, content type and body, as sent."""

    status: int
    reason: str
    content_type: str
    body: bytes  # at most max_body + 1 bytes


def device_request(
    host: str,
    port: int,
    address: str,
    *,
    context: ssl.SSLContext,
    method: str,
    path: str,
    timeout: float,
    max_body: int,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> DeviceAnswer:
    """One mTLS request as a device (to the gateway, or to the EST server), on its own connection.

    TCP goes to `address`; the TLS name and Host are `host` (curl's --resolve). TLS and socket
    errors are raised as they come, for the caller to tell a refused handshake from an
    unreachable server; past `timeout` seconds in all, TimeoutError."""
    connection = _PinnedHTTPSConnection(host, port, address, context, timeout)
    with _Deadline(timeout) as deadline:
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read(max_body + 1)
        except OSError:
            if deadline.expired:
                raise TimeoutError(f"no complete answer within {timeout:g} s") from None
            raise
        finally:
            connection.close()
    return DeviceAnswer(response.status, response.reason, response.getheader("Content-Type") or "", raw)


def device_get(
    host: str, port: int, address: str, *, context: ssl.SSLContext, path: str, timeout: float, max_body: int
) -> tuple[int, str, bytes]:
    """One mTLS GET to the gateway as a device: (status, reason, at most max_body + 1 bytes)."""
    answer = device_request(
        host, port, address, context=context, method="GET", path=path, timeout=timeout, max_body=max_body,
        headers={"Accept": "application/json"},
    )
    return answer.status, answer.reason, answer.body


# --- OAuth client credentials (fioctl login) --------------------------------------------------------


def fresh_client_credentials(client: HttpClient, credentials: ClientCredentials | None) -> ClientCredentials:
    """The credentials with a usable access token, as fioctl's Login: none yet -> the
    client_credentials grant; expired -> the refresh_token grant; the new token is written back
    into the config file."""
    assert credentials is not None
    if credentials.access_token and not credentials.is_expired():
        return credentials
    if not credentials.access_token:
        form = {"grant_type": "client_credentials"}
    elif credentials.refresh_token:
        form = {"grant_type": "refresh_token", "refresh_token": credentials.refresh_token}
    else:
        raise ConfigError("Missing refresh token", details=['  run `fioctl login` again to get a new one'])
    form.update(client_id=credentials.client_id, client_secret=credentials.client_secret)
    client._secrets += [value for value in (credentials.client_secret, credentials.refresh_token) if value]
    url = credentials.url.rstrip("/") + "/token/"
    resp = client.request("POST", url, ok=(200,), form=form, authenticated=False)
    answer = resp.body if isinstance(resp.body, dict) else {}
    if not isinstance(answer.get("access_token"), str) or not answer["access_token"]:
        raise ApiError(f"answer to POST '{url}' has no access_token")
    expires_in = answer.get("expires_in")
    fresh = ClientCredentials(
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        access_token=answer["access_token"],
        refresh_token=str(answer.get("refresh_token") or ""),
        token_type=str(answer.get("token_type") or ""),
        expires_in=float(expires_in) if isinstance(expires_in, (int, float)) else 0.0,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        url=credentials.url,
    )
    save_client_credentials(client.settings.config_path, fresh)
    return fresh


# --- Helpers ------------------------------------------------------------------------------------------


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


def _parse_json(raw: bytes, method: str, url: str) -> Any:
    try:
        parsed = json.loads(raw) if raw.strip() else {}
        # A lone "\udXXX" escape parses, but cannot be saved or handed on as UTF-8 text.
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(f"answer to {method} '{url}' holds a \\u escape that is not valid Unicode") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(f"answer to {method} '{url}' is not JSON") from None
    return parsed


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
