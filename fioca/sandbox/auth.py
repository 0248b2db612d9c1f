"""Who is asking: the credentials the Factory API accepts, as fioctl and lmp-device-register
send them (their public sources are the authority):

* `OSF-TOKEN: <api token>`: the factory's API token, verbatim.
* A renamed header carrying that same token verbatim: fioctl's `TOKEN_HEADER` and
  lmp-device-register's `--api-token-header` only change the header's *name* (for test
  servers and registration servers that expect another one). The real service reads
  `OSF-TOKEN`; a sandbox made with `token_header=NAME` also reads NAME, as such a test server
  does, and only then.
* `Authorization: Bearer <base64(access token)>`: an OAuth access token (`oauth.py`), base64
  encoded as both clients encode it (fioctl since 2020, lmp-device-register's device flow).
  A bare API token as a Bearer value is not a credential.

A client may send several (fioctl sends OSF-TOKEN and a Bearer token when its config has
both); the request carries the broadest scope among those that are valid.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from fioca import facts
from fioca.sandbox.oauth import SCOPE_ALL, OAuthServer
from fioca.sandbox.store import Store

BEARER = "Bearer "


@dataclass(frozen=True)
class Principal:
    """What the caller's credentials allow: SCOPE_ALL, or named scopes (`devices:create`)."""

    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return SCOPE_ALL in self.scopes or scope in self.scopes


class Authenticator:
    """Checks a request's headers against the factory token and the OAuth tokens issued."""

    def __init__(self, store: Store, oauth: OAuthServer, token_header: str | None = None):
        self.store = store
        self.oauth = oauth
        names = [facts.DEFAULT_TOKEN_HEADER]
        if token_header and token_header.lower() != facts.DEFAULT_TOKEN_HEADER.lower():
            names.append(token_header)
        self.token_headers = tuple(names)

    def principal(self, headers: Mapping[str, str]) -> Principal | None:
        """The caller, or None when no credential it sent is valid."""
        scopes: set[str] = set()
        factory = self.store.factory()
        if factory is None:
            return None
        for name in self.token_headers:
            presented = headers.get(name)
            if presented and hmac.compare_digest(presented.encode("utf-8"), factory.token.encode("utf-8")):
                scopes.add(SCOPE_ALL)
        authorization = headers.get("Authorization", "")
        if authorization.startswith(BEARER):
            access_token = _unbase64(authorization[len(BEARER):].strip())
            if access_token is not None:
                scopes |= self.oauth.scopes_of(access_token)
        return Principal(frozenset(scopes)) if scopes else None


def _unbase64(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
