"""The routing table of the sandbox API: what each path and method does, and the scope it needs.

Certs (PKI-SPEC section 2):
  GET|POST|PATCH  /ota/factories/<factory>/certs/
  GET             /ota/factories/<factory>/users/self/
  GET             /ota/factories/<factory>/users/      the one user (fioctl's owner column reads it)
Devices (lmp-device-register, factory-registration-ref, fioctl's `devices`):
  POST            /ota/devices/                  register with a CSR (scope devices:create)
  PUT             /ota/devices/                  pre-register a certificate (scope devices:create)
  GET|HEAD        /ota/devices/[?factory=F]      list; a HEAD without credentials is 401, which
                                                 lmp-device-register's probe takes as "up" (< 500)
  GET|DELETE      /ota/devices/<name>/?factory=F[&by-uuid=1]
                                                 one device; DELETE puts it on the deny-list
  GET             /ota/factories/<factory>/denied-devices/[?limit=N&page=P]   as fioctl pages it
  DELETE          /ota/factories/<factory>/denied-devices/<uuid>/   frees the uuid
OAuth (oauth.py; no credentials):
  POST            /oauth/token/
  POST            /oauth/authorization/device/
  GET             /oauth/device/                 the verification page a user is sent to
"""

from __future__ import annotations

import re
from typing import Any

from fioca.sandbox.api import Request, Route
from fioca.sandbox.backend import Backend, SandboxApiError
from fioca.sandbox.certs import is_canonical_uuid
from fioca.sandbox.oauth import SCOPE_DEVICES_CREATE, OAuthServer
from fioca.sandbox.registration import Registrar
from fioca.sandbox.store import DeviceRecord, Store

FACTORY = r"(?P<factory>[^/]+)"


def certs_routes(backend: Backend) -> list[Route]:
    """The Factory certs API of PKI-SPEC section 2."""
    return [
        Route(
            name="certs",
            pattern=re.compile(rf"^/ota/factories/{FACTORY}/certs/$"),
            methods={
                "GET": lambda request: backend.get_certs(),
                "POST": lambda request: (201, backend.post_certs(request.body)),
                "PATCH": lambda request: (200, backend.patch_certs(request.body)),
            },
        ),
        Route(
            name="users-self",
            pattern=re.compile(rf"^/ota/factories/{FACTORY}/users/self/$"),
            methods={"GET": lambda request: (200, backend.user_self())},
        ),
        Route(
            name="users",
            pattern=re.compile(rf"^/ota/factories/{FACTORY}/users/$"),
            methods={"GET": lambda request: (200, [backend.user_self()])},
        ),
    ]


def device_routes(registrar: Registrar) -> list[Route]:
    """Registration, pre-registration and fioctl's device calls."""
    store, factory = registrar.backend.store, registrar.backend.factory.name
    return [
        Route(
            name="devices",
            pattern=re.compile(r"^/ota/devices/$"),
            methods={
                "POST": lambda request: (201, registrar.register(request.body)),
                "PUT": lambda request: (201, api_device_json(registrar.pre_register(request.body), factory)),
                "GET": lambda request: (200, _device_list(store.devices(), factory)),
            },
            scopes={"POST": SCOPE_DEVICES_CREATE, "PUT": SCOPE_DEVICES_CREATE},
        ),
        Route(
            name="device",
            pattern=re.compile(r"^/ota/devices/(?P<device>[^/]+)/$"),
            methods={
                "GET": lambda request: (200, api_device_json(_one_device(store, request), factory)),
                "DELETE": lambda request: _delete_device(store, request),
            },
        ),
        Route(
            name="denied-devices",
            pattern=re.compile(rf"^/ota/factories/{FACTORY}/denied-devices/$"),
            methods={"GET": lambda request: (200, _denied_page(store.denied_devices(), factory, request))},
        ),
        Route(
            name="denied-device",
            pattern=re.compile(rf"^/ota/factories/{FACTORY}/denied-devices/(?P<uuid>[^/]+)/$"),
            methods={"DELETE": lambda request: _forget_denied(store, request.params["uuid"])},
        ),
    ]


def oauth_routes(oauth: OAuthServer, approve_hint: str) -> list[Route]:
    """The OAuth endpoints; they take no credentials (the client's are in the body)."""
    return [
        Route(name="oauth-token", pattern=re.compile(r"^/oauth/token/$"), scope=None, form=True,
              methods={"POST": lambda request: oauth.token(request.raw_body)}),
        Route(name="oauth-device", pattern=re.compile(r"^/oauth/authorization/device/$"), scope=None, form=True,
              methods={"POST": lambda request: oauth.authorize_device(request.raw_body)}),
        Route(name="oauth-verify", pattern=re.compile(r"^/oauth/device/$"), scope=None,
              methods={"GET": lambda request: (200, {"message": approve_hint})}),
    ]


def api_device_json(device: DeviceRecord, factory: str) -> dict[str, Any]:
    """A device as the API shows it (the fields of fioctl's client.Device that the sandbox has)."""
    return {
        "uuid": device.uuid,
        "name": device.name,
        "owner": device.owner,
        "factory": factory,
        "device-group": device.group,
        "group": {"name": device.group} if device.group else None,
        "last-seen": device.last_seen or "",
        "created-at": device.created_at,
        "public-key": device.pubkey,
        "is-prod": device.is_prod,
        "ca-serial": device.ca_serial,
    }


def _device_list(devices: list[DeviceRecord], factory: str) -> dict[str, Any]:
    return {"devices": [api_device_json(device, factory) for device in devices], "total": len(devices), "next": None}


def _denied_page(devices: list[DeviceRecord], factory: str, request: Request) -> dict[str, Any]:
    """One page of the deny-list: all of it without `limit`, else `limit` devices from `page`
    (1 first), with `next` the URL of the page after it while there is one."""
    if "limit" not in request.query and "page" not in request.query:
        return _device_list(devices, factory)
    try:
        limit, page = int(request.query.get("limit", "500")), int(request.query.get("page", "1"))
    except ValueError:
        limit = page = 0
    if not (1 <= limit <= 1000 and page >= 1):
        raise SandboxApiError(400, "Invalid pagination: limit must be 1 to 1000 and page at least 1")
    start = (page - 1) * limit
    listed = _device_list(devices[start : start + limit], factory)
    if start + limit < len(devices):
        host = request.headers.get("Host", "localhost")
        listed["next"] = f"https://{host}{request.path}?limit={limit}&page={page + 1}"
    return {**listed, "total": len(devices)}


def _not_found(what: str) -> SandboxApiError:
    return SandboxApiError(404, f"Device not found: {what}")


def _one_device(store: Store, request: Request) -> DeviceRecord:
    """The device a path names: by uuid with `by-uuid=1`, by name otherwise (deleted ones are
    gone from this view)."""
    wanted = request.params["device"]
    if request.query.get("by-uuid") in ("1", "true"):
        record = store.device(wanted) if is_canonical_uuid(wanted) else None
        if record is None or record.deny_listed:
            raise _not_found(wanted)
        return record
    named = store.devices_named(wanted)
    if not named:
        raise _not_found(wanted)
    if len(named) > 1:
        raise SandboxApiError(409, f"Several devices are named {wanted}", ["use by-uuid=1 with the device uuid"])
    return named[0]


def _delete_device(store: Store, request: Request) -> tuple[int, Any]:
    device = _one_device(store, request)
    store.set_device_deny_listed(device.uuid, True)
    return 200, {}


def _forget_denied(store: Store, device_uuid: str) -> tuple[int, Any]:
    if not (is_canonical_uuid(device_uuid) and store.forget_denied_device(device_uuid)):
        raise SandboxApiError(404, f"No deleted device has uuid {device_uuid}")
    return 200, {}
