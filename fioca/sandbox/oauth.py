"""OAuth 2 as the Foundries.io service speaks it to fioctl and lmp-device-register, served by
the sandbox under `<api url>/oauth` (the real one is `https://app.foundries.io/oauth`).

Requests are `application/x-www-form-urlencoded` POSTs; answers are JSON.

* `POST /oauth/token/`, `grant_type=client_credentials&client_id=..&client_secret=..`
  (`fioctl login`, and fioctl when it has no access token yet), and
  `grant_type=refresh_token&client_id=..&client_secret=..&refresh_token=..` (fioctl once the
  token's `expires_in` has passed since it got it): 200 with `access_token`, `token_type`
  ("Bearer"), `expires_in` (seconds), `refresh_token`, `scope` and `orgs` (`[{"name":
  <factory>}]`, which fioctl takes as its default factory). A refresh token works once, and
  the access token issued with it ends when it is used. fioctl requires exactly 200.
* lmp-device-register's device flow (RFC 8628): `POST /oauth/authorization/device/` with
  `client_id=<device uuid>&scope=<factory>:devices:create` answers 200 with `device_code`,
  `user_code`, `verification_uri`, `expires_in` and `interval`; then
  `POST /oauth/token/` with `grant_type=urn:ietf:params:oauth:grant-type:device_code`,
  `device_code`, `client_id` and `scope` answers 400 `{"error": "authorization_pending"}`
  until a user approves the user code (`Sandbox.approve_device`, or
  `fioca sandbox approve-device`), then 200 with an access token of that scope (once).
  `access_denied`, `expired_token` and `invalid_grant` end the flow, as the client expects.

Errors are RFC 6749's `{"error": ..., "error_description": ...}` (400; 401 for a wrong client
secret). Tokens are random and stored only as SHA-256 hashes (store.py).

The sandbox's scopes: the application credential's tokens may do what the API token may
(`all`); a device-flow token may only create devices (`devices:create`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from fioca.sandbox.store import Store

SCOPE_ALL = "all"
SCOPE_DEVICES_CREATE = "devices:create"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ACCESS_TOKEN_SECONDS = 3600
DEVICE_CODE_SECONDS = 900
POLL_INTERVAL_SECONDS = 5  # what the device flow tells lmp-device-register to wait between polls
USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels, no look-alikes (RFC 8628 section 6.1)
MAX_CLIENT_ID_LENGTH = 128

Answer = tuple[int, dict[str, Any]]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def oauth_error(error: str, description: str, status: int = 400) -> Answer:
    return status, {"error": error, "error_description": description}


def parse_form(raw: bytes) -> dict[str, str] | None:
    """An urlencoded body as a dict; None when it is not one or repeats a parameter."""
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        return None
    form = dict(pairs)
    return form if len(form) == len(pairs) else None  # RFC 6749 3.2: no parameter twice


def normal_user_code(text: str) -> str:
    """A user code as typed (any case, dash or not) in the form the server issued it."""
    letters = "".join(text.split()).replace("-", "").upper()
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else letters


def decide_device(store: Store, user_code: str, *, approve: bool) -> bool:
    """A user approves (or denies) the device showing `user_code`; False when no pending,
    unexpired authorization has it. Works on the store of a running sandbox from another
    process too (`fioca sandbox approve-device`)."""
    state = "approved" if approve else "denied"
    return store.decide_device_authorization(normal_user_code(user_code), state, time.time())


class OAuthServer:
    """The token and device-authorization endpoints for the one factory of a store."""

    def __init__(self, store: Store, *, verification_uri: Callable[[], str],
                 access_token_seconds: int = ACCESS_TOKEN_SECONDS):
        self.store = store
        self.verification_uri = verification_uri
        self.access_token_seconds = access_token_seconds

    @property
    def factory(self) -> str:
        record = self.store.factory()
        assert record is not None
        return record.name

    # -- what a Bearer token may do ------------------------------------------------------------

    def scopes_of(self, access_token: str) -> frozenset[str]:
        """The scopes of a valid, unexpired access token; empty for anything else."""
        token = self.store.oauth_token(token_hash(access_token))
        if token is None or token.expires_at <= time.time():
            return frozenset()
        factory, _, scope = token.scope.partition(":")  # "<factory>:<scope>"
        return frozenset({scope}) if factory == self.factory else frozenset()

    # -- POST /oauth/token/ ----------------------------------------------------------------------

    def token(self, raw_body: bytes) -> Answer:
        form = parse_form(raw_body)
        if form is None:
            return oauth_error("invalid_request", "the body must be application/x-www-form-urlencoded, each parameter once")
        grant = form.get("grant_type")
        if grant == "client_credentials":
            return self._client_credentials(form)
        if grant == "refresh_token":
            return self._refresh(form)
        if grant == DEVICE_GRANT:
            return self._device_token(form)
        return oauth_error("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def _client_ok(self, form: dict[str, str]) -> bool:
        factory = self.store.factory()
        if factory is None or not factory.client_id or not factory.client_secret:
            return False
        same_id = hmac.compare_digest(form.get("client_id", "").encode(), factory.client_id.encode())
        same_secret = hmac.compare_digest(form.get("client_secret", "").encode(), factory.client_secret.encode())
        return same_id and same_secret

    def _client_credentials(self, form: dict[str, str]) -> Answer:
        if not self._client_ok(form):
            return oauth_error("invalid_client", "unknown client_id or wrong client_secret", 401)
        return 200, self._issue(form["client_id"], "client_credentials", f"{self.factory}:{SCOPE_ALL}", refresh=True)

    def _refresh(self, form: dict[str, str]) -> Answer:
        if not self._client_ok(form):
            return oauth_error("invalid_client", "unknown client_id or wrong client_secret", 401)
        old = self.store.take_refresh_token(token_hash(form.get("refresh_token", "")), form["client_id"])
        if old is None:
            return oauth_error("invalid_grant", "the refresh token is unknown or was used already")
        return 200, self._issue(form["client_id"], "refresh_token", old.scope, refresh=True)

    def _issue(self, client_id: str, grant_type: str, scope: str, *, refresh: bool) -> dict[str, Any]:
        access_token = secrets.token_urlsafe(32)
        refresh_token = secrets.token_urlsafe(32) if refresh else None
        self.store.add_oauth_token(
            access_hash=token_hash(access_token), refresh_hash=token_hash(refresh_token) if refresh_token else None,
            grant_type=grant_type, client_id=client_id, scope=scope,
            expires_at=time.time() + self.access_token_seconds,
        )
        answer: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.access_token_seconds,
            "scope": scope,
            "orgs": [{"name": self.factory}],
        }
        if refresh_token:
            answer["refresh_token"] = refresh_token
        return answer

    # -- the device flow -------------------------------------------------------------------------

    def authorize_device(self, raw_body: bytes) -> Answer:
        """POST /oauth/authorization/device/: a device code for a device to poll with."""
        form = parse_form(raw_body)
        if form is None:
            return oauth_error("invalid_request", "the body must be application/x-www-form-urlencoded, each parameter once")
        client_id, scope = form.get("client_id", ""), form.get("scope", "")
        if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH or not client_id.isprintable():
            return oauth_error("invalid_request", "client_id (the device uuid) is required")
        if scope != f"{self.factory}:{SCOPE_DEVICES_CREATE}":
            return oauth_error("invalid_scope", f"the device flow grants only {self.factory}:{SCOPE_DEVICES_CREATE}")
        device_code = secrets.token_urlsafe(32)
        for _ in range(5):  # a user code collision is rare; try another
            user_code = "-".join("".join(secrets.choice(USER_CODE_LETTERS) for _ in range(4)) for _ in range(2))
            try:
                self.store.add_device_authorization(code_hash=token_hash(device_code), user_code=user_code,
                                                    client_id=client_id, scope=scope,
                                                    expires_at=time.time() + DEVICE_CODE_SECONDS)
                break
            except sqlite3.IntegrityError:
                continue
        else:
            return oauth_error("temporarily_unavailable", "could not make a user code; try again", 503)
        uri = self.verification_uri()
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": uri,
            "verification_uri_complete": f"{uri}?user_code={quote(user_code)}",
            "expires_in": DEVICE_CODE_SECONDS,
            "interval": POLL_INTERVAL_SECONDS,
        }

    def decide(self, user_code: str, *, approve: bool) -> bool:
        return decide_device(self.store, user_code, approve=approve)

    def _device_token(self, form: dict[str, str]) -> Answer:
        code_hash = token_hash(form.get("device_code", ""))
        authorization = self.store.device_authorization(code_hash)
        if authorization is None or authorization.client_id != form.get("client_id"):
            return oauth_error("invalid_grant", "unknown device_code for this client_id")
        if authorization.state == "used":
            return oauth_error("invalid_grant", "this device_code was exchanged already")
        if authorization.state == "denied":
            return oauth_error("access_denied", "the user denied this device")
        if authorization.expires_at <= time.time():
            return oauth_error("expired_token", "the device code expired; start again")
        if authorization.state == "pending":
            return oauth_error("authorization_pending", "waiting for a user to approve the user code")
        if not self.store.use_device_authorization(code_hash):
            return oauth_error("invalid_grant", "this device_code was exchanged already")
        return 200, self._issue(authorization.client_id, DEVICE_GRANT, authorization.scope, refresh=False)
