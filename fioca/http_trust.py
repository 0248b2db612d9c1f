"""The CAs fioca's HTTP client trusts, in one SSL context: the system's store, certifi's bundle
(requests adds it to every verified connection) and the user's CACERT, which fioctl too adds
to the system's pool rather than replacing it.

Parsing the two stores is ~40 ms of OpenSSL work, done with the GIL released. `load_soon()`
starts it in a thread, so that it runs on another core while fioca imports the rest of
itself; `client_context()` takes what the thread made (each context once: the CACERT is added
to it) or builds it then. Only the standard library and certifi: nothing here waits for
requests to load.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from fioca.errors import ConfigError

if TYPE_CHECKING:
    import ssl

_lock = threading.Lock()
_loading: threading.Thread | None = None
_loaded: list[ssl.SSLContext] = []  # what the thread made, not yet taken


def load_soon() -> None:
    """Start building the system's and certifi's part of the next context in a thread."""
    global _loading
    with _lock:
        if _loading is not None or _loaded:
            return
        _loading = threading.Thread(target=_load_quietly, name="fioca-http-trust", daemon=True)
        _loading.start()


def client_context(cacert: Path | None) -> ssl.SSLContext:
    """A context of its own that verifies servers against the system's CAs, certifi's bundle
    and `cacert` (CACERT / server.cacert) when given."""
    import ssl

    context = _take_loaded() or _system_and_certifi()
    if cacert:
        try:
            context.load_verify_locations(cafile=str(cacert))
        except (ssl.SSLError, OSError, ValueError):
            raise ConfigError(f"CA bundle {cacert} (CACERT / server.cacert) holds no usable PEM certificate") from None
    return context


def certifi_bundle() -> str:
    """The bundle requests verifies with (requests.utils.DEFAULT_CA_BUNDLE_PATH is this)."""
    import certifi

    return certifi.where()


def _system_and_certifi() -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context()
    bundle = certifi_bundle()
    try:
        context.load_verify_locations(cafile=bundle)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"certifi's CA bundle {bundle} cannot be loaded ({exc}); reinstall certifi") from None
    return context


def _load_quietly() -> None:
    # One that raised is not kept: client_context() builds it again and raises there.
    try:
        context = _system_and_certifi()
    except Exception:  # noqa: BLE001 - reported by the caller that needs the context
        return
    _loaded.append(context)


def _take_loaded() -> ssl.SSLContext | None:
    global _loading
    with _lock:
        thread, _loading = _loading, None
    if thread is not None:
        thread.join()
    with _lock:
        return _loaded.pop() if _loaded else None
