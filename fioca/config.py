"""Settings, resolved the way fioctl resolves them: flag, then environment, then config file.

This is the only module that reads the environment. Config file: `-c/--config`, default
`~/.config/fioctl.yaml`; `FIOCTL_CONFIG` overrides the flag, as in fioctl. Keys, as fioctl
reads them: `factory`, `token`, `server.url`, `server.insecure_skip_verify` and
`clientcredentials` (what `fioctl login` writes: client id and secret, the OAuth access and
refresh tokens, their type, lifetime and creation time, and the OAuth URL); fioca adds
`server.cacert` (the CA bundle `fioca sandbox serve` writes). With a token, it is sent in the
`TOKEN_HEADER` header (default OSF-TOKEN); without one, the client credentials' access token
is sent as `Authorization: Bearer` (refreshed first when it has expired, as fioctl does; see
`fioca.api`) and the refreshed credentials are written back with `save_client_credentials`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fioca import facts
from fioca.errors import ConfigError

DEFAULT_SERVER = facts.DEFAULT_API
DEFAULT_CONFIG = Path("~/.config/fioctl.yaml")
DEFAULT_TOKEN_HEADER = facts.DEFAULT_TOKEN_HEADER
DEFAULT_OAUTH_URL = "https://app.foundries.io/oauth"
DEFAULT_HTTP_TIMEOUT = 60.0
CONFIG_MODE = 0o600  # the file holds a token or client secret (fioctl writes 0644)

# How to get going, shown under every "not configured" error.
SANDBOX_HINT = (
    "No factory to try it on? The sandbox is one: `fioca sandbox serve --data ./sandbox &`, "
    "then `export FIOCTL_CONFIG=./sandbox/fioctl.yaml`"
)


@dataclass(frozen=True)
class ClientCredentials:
    """`clientcredentials` of fioctl.yaml. Secrets are kept out of repr."""

    client_id: str
    client_secret: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    token_type: str = ""
    expires_in: float = 0.0
    created: str = ""  # RFC 3339, UTC, when the access token was issued
    url: str = DEFAULT_OAUTH_URL

    def is_expired(self, now: datetime | None = None) -> bool:
        """fioctl's rule: expired once `expires_in` seconds have passed since `created`."""
        if not self.expires_in or not self.created:
            return False
        try:
            created = datetime.fromisoformat(self.created.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError("Error parsing oauth token creation date (clientcredentials.created)") from None
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        now = now or datetime.now(UTC)
        return (now - created).total_seconds() > self.expires_in

    def as_yaml(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "created": self.created,
            "url": self.url,
        }


@dataclass(frozen=True)
class Settings:
    """Every setting a command uses, resolved once: flags, then the environment, then fioctl.yaml."""

    factory: str | None
    server_url: str
    config_path: Path
    config_exists: bool = False
    token_header: str = DEFAULT_TOKEN_HEADER
    cacert: Path | None = None
    insecure_skip_verify: bool = False
    verbose: bool = False
    http_timeout: float = DEFAULT_HTTP_TIMEOUT  # seconds for a whole request (FIOCA_HTTP_TIMEOUT)
    # repr=False: a Settings value may end up in a traceback or a debug line; secrets may not.
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None  # where the token came from, for a 401's message
    client_credentials: ClientCredentials | None = None
    proxy: str | None = field(default=None, repr=False)  # HTTPS_PROXY / HTTP_PROXY (may hold a password)
    no_proxy: str = ""
    # lmp-device-register's environment, for `fioca device register`.
    device_api: str | None = None  # DEVICE_API; None: the API's /ota/devices/
    device_factory: str | None = None
    device_production: bool = False
    device_oauth_url: str | None = None  # OAUTH_BASE; None: DEFAULT_OAUTH_URL
    hsm_pin: str | None = field(default=None, repr=False)  # FIOCA_HSM_PIN
    # The rest of the environment, for modules that pass named variables on (an HSM module's
    # config, the locale): hand them this, never os.environ.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def auth_source(self) -> str:
        """Where the credentials the API sees came from (never the secret itself)."""
        if self.token:
            return self.token_source or "the token"
        if self.client_credentials is not None:
            return f'"clientcredentials" in {self.config_path} (fioctl login)'
        return "nowhere"

    def require_auth(self) -> None:
        """A token or client credentials, as fioctl requires them (its message first)."""
        if self.token or self.client_credentials is not None:
            return
        raise ConfigError(
            'Please run: "fioctl login" first, or give fioca an API token',
            details=[
                f'  a token: -t/--token (visible to other users), FIOCTL_TOKEN, or "token:" in {self.config_path}',
                f'  or the client credentials `fioctl login` writes to {self.config_path} (FIOCTL_CONFIG, -c)',
                f"  {SANDBOX_HINT}",
            ],
        )

    def require_factory(self) -> str:
        if not self.factory:
            where = f"in {self.config_path}" if self.config_exists else f"in {self.config_path} (there is no such file)"
            raise ConfigError(
                'Required flag "factory" not set',
                details=[f'  set it with -f/--factory, FIOCTL_FACTORY, or "factory:" {where}', f"  {SANDBOX_HINT}"],
            )
        return self.factory



# --- Reading the file ---------------------------------------------------------------------------


def _read_config_file(path: Path, *, explicit: bool) -> tuple[Mapping[str, Any], bool]:
    """The file's mapping and whether it exists (a missing default file is no error)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}, False
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc.__class__.__name__}") from None
    return _parse_yaml(text, path), True


def _parse_yaml(text: str, path: Path) -> Mapping[str, Any]:
    import yaml  # only once a file is read: it is slow to import

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def _string(value: Any, key: str, path: Path) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigError(f'config file {path}: "{key}" must be a string')
    return str(value)


def _section(data: Mapping[str, Any], key: str, path: Path) -> Mapping[str, Any]:
    section = data.get(key) or {}
    if not isinstance(section, dict):
        raise ConfigError(f'config file {path}: "{key}" must be a mapping')
    # viper reads keys case-insensitively; fioctl's own files use lower case.
    return {str(name).lower(): value for name, value in section.items()}


def _client_credentials(data: Mapping[str, Any], path: Path) -> ClientCredentials | None:
    section = _section(data, "clientcredentials", path)
    client_id = _string(section.get("client_id"), "clientcredentials.client_id", path)
    if not client_id:
        return None  # fioctl: no client id, no credentials
    expires_in = section.get("expires_in") or 0
    if not isinstance(expires_in, (int, float)) or isinstance(expires_in, bool):
        raise ConfigError(f'config file {path}: "clientcredentials.expires_in" must be a number of seconds')

    def text(key: str) -> str:
        return _string(section.get(key), f"clientcredentials.{key}", path) or ""

    return ClientCredentials(
        client_id=client_id,
        client_secret=text("client_secret"),
        access_token=text("access_token"),
        refresh_token=text("refresh_token"),
        token_type=text("token_type"),
        expires_in=float(expires_in),
        created=text("created"),
        url=text("url") or DEFAULT_OAUTH_URL,
    )


def _cacert(env: Mapping[str, str], server: Mapping[str, Any], config_path: Path) -> Path | None:
    from_env = env.get("CACERT")
    cacert = from_env or _string(server.get("cacert"), "server.cacert", config_path)
    if not cacert:
        return None
    path = Path(cacert).expanduser()
    if not path.is_absolute() and not from_env:
        path = config_path.parent / path  # relative to the file that names it, not to the cwd
    if not path.is_file():
        raise ConfigError(f"CA bundle {path} (CACERT / server.cacert) does not exist")
    return path


def _http_timeout(env: Mapping[str, str]) -> float:
    try:
        seconds = float(env.get("FIOCA_HTTP_TIMEOUT") or DEFAULT_HTTP_TIMEOUT)
    except ValueError:
        raise ConfigError("FIOCA_HTTP_TIMEOUT must be a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError("FIOCA_HTTP_TIMEOUT must be a positive number of seconds")
    return seconds


def _token(flag: str | None, env: Mapping[str, str], data: Mapping[str, Any], path: Path) -> tuple[str | None, str | None]:
    if flag:
        return flag, "-t/--token"
    if env.get("FIOCTL_TOKEN"):
        return env["FIOCTL_TOKEN"], "FIOCTL_TOKEN"
    from_file = _string(data.get("token"), "token", path)
    return (from_file, f'"token" in {path}') if from_file else (None, None)


def _proxy(env: Mapping[str, str], server_url: str) -> tuple[str | None, str]:
    """The proxy for the API's scheme, as curl and requests read it from the environment."""
    scheme = "https" if server_url.startswith("https://") else "http"
    proxy = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY") or env.get("all_proxy") or env.get("ALL_PROXY")
    return proxy or None, env.get("no_proxy") or env.get("NO_PROXY") or ""


def config_file(*, config: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The config file in use (FIOCTL_CONFIG, else -c/--config, else fioctl's default), unread."""
    env = os.environ if environ is None else environ
    return Path(env.get("FIOCTL_CONFIG") or config or DEFAULT_CONFIG).expanduser()


def load_settings(
    *,
    factory: str | None = None,
    token: str | None = None,
    config: Path | None = None,
    server: str | None = None,
    verbose: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from flags (the keyword arguments), the environment and the file."""
    env = dict(os.environ if environ is None else environ)
    explicit = bool(env.get("FIOCTL_CONFIG")) or config is not None
    config_path = config_file(config=config, environ=env)
    data, exists = _read_config_file(config_path, explicit=explicit)
    server_section = _section(data, "server", config_path)

    server_url = (
        server or env.get("FIOCA_SERVER") or _string(server_section.get("url"), "server.url", config_path)
        or DEFAULT_SERVER
    )
    if not server_url.startswith(("http://", "https://")):
        raise ConfigError(f"server URL {server_url!r} must start with http:// or https://")
    insecure_skip_verify = server_section.get("insecure_skip_verify") or False  # absent, null, empty: off
    if not isinstance(insecure_skip_verify, bool):
        # bool("false") is True: a quoted value would silently turn TLS checks off.
        raise ConfigError(f'config file {config_path}: "server.insecure_skip_verify" must be true or false')
    token_value, token_source = _token(token, env, data, config_path)
    proxy, no_proxy = _proxy(env, server_url)

    return Settings(
        factory=factory or env.get("FIOCTL_FACTORY") or _string(data.get("factory"), "factory", config_path),
        server_url=server_url.rstrip("/"),
        config_path=config_path,
        config_exists=exists,
        token_header=env.get("TOKEN_HEADER") or DEFAULT_TOKEN_HEADER,
        cacert=_cacert(env, server_section, config_path),
        insecure_skip_verify=insecure_skip_verify,
        verbose=verbose,
        http_timeout=_http_timeout(env),
        token=token_value,
        token_source=token_source,
        client_credentials=_client_credentials(data, config_path),
        proxy=proxy,
        no_proxy=no_proxy,
        device_api=env.get("DEVICE_API") or None,
        device_factory=env.get("DEVICE_FACTORY") or None,
        device_production="PRODUCTION" in env,
        device_oauth_url=env.get("OAUTH_BASE") or None,
        hsm_pin=env.get("FIOCA_HSM_PIN") or None,
        environ=env,
    )


def tracebacks_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """FIOCA_TRACEBACK=1: show where an internal error happened (read even when nothing else loads)."""
    env = os.environ if environ is None else environ
    return bool(env.get("FIOCA_TRACEBACK"))


# --- Writing back refreshed client credentials --------------------------------------------------


def save_client_credentials(path: Path, credentials: ClientCredentials) -> None:
    """Replace `clientcredentials` in the config file, keeping its other keys, as fioctl does
    after a refresh; written whole to a temporary file and renamed, 0600."""
    import yaml

    data, _exists = _read_config_file(path, explicit=False)
    updated = dict(data)
    updated["clientcredentials"] = credentials.as_yaml()
    target = path.resolve()  # a symlinked config stays a symlink
    fd, temporary = tempfile.mkstemp(prefix=".fioctl-", suffix=".yaml", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), CONFIG_MODE)
            yaml.safe_dump(updated, handle, sort_keys=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"cannot update {path} with the refreshed OAuth token: {exc.strerror}") from None
