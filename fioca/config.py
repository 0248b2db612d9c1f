"""Settings, resolved the way fioctl resolves them: flag, then environment, then config file.

Config file: `-c/--config`, default `~/.config/fioctl.yaml`; `FIOCTL_CONFIG` overrides the
flag, as in fioctl. Keys: `factory`, `token`, `server.url`, `server.cacert` (fioca's addition:
the CA bundle for the API's TLS, which `fioca sandbox serve` writes), and
`server.insecure_skip_verify`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from fioca.errors import ConfigError

DEFAULT_SERVER = "https://api.foundries.io"
DEFAULT_CONFIG = Path("~/.config/fioctl.yaml")
DEFAULT_TOKEN_HEADER = "OSF-TOKEN"


@dataclass(frozen=True)
class Settings:
    factory: str | None
    server_url: str
    config_path: Path
    token_header: str = DEFAULT_TOKEN_HEADER
    cacert: Path | None = None
    insecure_skip_verify: bool = False
    verbose: bool = False
    http_timeout: float = 60.0  # seconds to wait for an answer (FIOCA_HTTP_TIMEOUT)
    # repr=False: a Settings value may end up in a traceback or a debug line; the token may not.
    token: str | None = field(default=None, repr=False)

    def require_factory(self) -> str:
        if not self.factory:
            raise ConfigError('Required flag "factory" not set')
        return self.factory

    def require_token(self) -> str:
        if not self.token:
            raise ConfigError(
                f'no API token: set FIOCTL_TOKEN, "token" in {self.config_path}, or -t/--token'
            )
        return self.token


def _read_config_file(path: Path, *, explicit: bool) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc.__class__.__name__}") from None
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
    if not isinstance(value, (str, int)):
        raise ConfigError(f'config file {path}: "{key}" must be a string')
    return str(value)


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
    env = os.environ if environ is None else environ
    explicit = bool(env.get("FIOCTL_CONFIG")) or config is not None
    config_path = Path(env.get("FIOCTL_CONFIG") or config or DEFAULT_CONFIG).expanduser()
    data = _read_config_file(config_path, explicit=explicit)
    server_section = data.get("server") or {}
    if not isinstance(server_section, dict):
        raise ConfigError(f'config file {config_path}: "server" must be a mapping')

    server_url = (
        server or env.get("FIOCA_SERVER") or _string(server_section.get("url"), "server.url", config_path)
        or DEFAULT_SERVER
    )
    if not server_url.startswith(("http://", "https://")):
        raise ConfigError(f"server URL {server_url!r} must start with http:// or https://")
    cacert = env.get("CACERT") or _string(server_section.get("cacert"), "server.cacert", config_path)
    if cacert:
        # A relative cacert in the config file is relative to the file, not to the cwd.
        cacert_path = Path(cacert).expanduser()
        if not cacert_path.is_absolute() and not env.get("CACERT"):
            cacert_path = config_path.parent / cacert_path
        if not cacert_path.is_file():
            raise ConfigError(f"CA bundle {cacert_path} (CACERT / server.cacert) does not exist")
    else:
        cacert_path = None
    insecure_skip_verify = server_section.get("insecure_skip_verify") or False  # absent, null, empty: off
    if not isinstance(insecure_skip_verify, bool):
        # bool("false") is True: a quoted value would silently turn TLS checks off.
        raise ConfigError(f'config file {config_path}: "server.insecure_skip_verify" must be true or false')

    try:
        http_timeout = float(env.get("FIOCA_HTTP_TIMEOUT") or 60)
    except ValueError:
        raise ConfigError("FIOCA_HTTP_TIMEOUT must be a number of seconds") from None
    if http_timeout <= 0:
        raise ConfigError("FIOCA_HTTP_TIMEOUT must be a positive number of seconds")

    return Settings(
        http_timeout=http_timeout,
        factory=factory or env.get("FIOCTL_FACTORY") or _string(data.get("factory"), "factory", config_path),
        token=token or env.get("FIOCTL_TOKEN") or _string(data.get("token"), "token", config_path),
        server_url=server_url.rstrip("/"),
        config_path=config_path,
        token_header=env.get("TOKEN_HEADER") or DEFAULT_TOKEN_HEADER,
        cacert=cacert_path,
        insecure_skip_verify=insecure_skip_verify,
        verbose=verbose,
    )
