"""Where the CLI finds the deployment: flags, ``SHARDKEEP_*`` variables, a configuration file.

Each connection setting comes from its flag, else its environment variable,
else the configuration file (TOML): ``--config FILE``, else
``$SHARDKEEP_CONFIG``, else ``config.toml`` in the state directory if it
exists. Relative paths in the file are relative to the file. Example::

    host = "wallets.example.com:7500"        # nginx, mutual TLS
    relay = "relay.example.com:443"
    coordinator_key = "coordinator.pem"
    server_ca = "ca.pem"                     # the servers' CA (implies TLS)
    client_cert = "coordinator.crt"          # mutual TLS
    client_key = "coordinator.key"
    api_token_file = "api-token"

========================  ============================  ==================
flag                      variable                      file key
========================  ============================  ==================
``--host``                SHARDKEEP_HOST                host
``--relay``               SHARDKEEP_RELAY               relay
``--coordinator-key``     SHARDKEEP_COORDINATOR_KEY     coordinator_key
``--root``                SHARDKEEP_ROOT                root
``--tls``                 SHARDKEEP_TLS (1)             tls (true)
``--server-ca``           SHARDKEEP_SERVER_CA           server_ca
``--server-name``         SHARDKEEP_SERVER_NAME         server_name
``--client-cert``         SHARDKEEP_CLIENT_CERT         client_cert
``--client-key``          SHARDKEEP_CLIENT_KEY          client_key
``--api-token-file``      SHARDKEEP_API_TOKEN_FILE      api_token_file
(none: a secret)          SHARDKEEP_API_TOKEN           (none)
========================  ============================  ==================
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tss.errors import InputError

if TYPE_CHECKING:
    from client.sdk.transport import Transport

__all__ = [
    "CONFIG_ENV",
    "SETTINGS",
    "add_transport_options",
    "resolve_connection",
    "transport_from_args",
]

CONFIG_ENV: Final = "SHARDKEEP_CONFIG"
TOKEN_ENV: Final = "SHARDKEEP_API_TOKEN"

# setting -> (environment variable, kind): "str", "path" or "flag"
SETTINGS: Final[Mapping[str, tuple[str, str]]] = {
    "host": ("SHARDKEEP_HOST", "str"),
    "relay": ("SHARDKEEP_RELAY", "str"),
    "coordinator_key": ("SHARDKEEP_COORDINATOR_KEY", "path"),
    "root": ("SHARDKEEP_ROOT", "path"),
    "tls": ("SHARDKEEP_TLS", "flag"),
    "server_ca": ("SHARDKEEP_SERVER_CA", "path"),
    "server_name": ("SHARDKEEP_SERVER_NAME", "str"),
    "client_cert": ("SHARDKEEP_CLIENT_CERT", "path"),
    "client_key": ("SHARDKEEP_CLIENT_KEY", "path"),
    "api_token_file": ("SHARDKEEP_API_TOKEN_FILE", "path"),
}


def add_transport_options(group: Any) -> None:
    """Add the TLS, token and configuration-file flags to an argument group or parser."""
    group.add_argument(
        "--config", type=Path, metavar="FILE",
        help=f"connection settings (TOML; else ${CONFIG_ENV}, else STATE/config.toml)",
    )  # fmt: skip
    group.add_argument(
        "--tls", action="store_true", default=None,
        help="use TLS with the system's roots ($SHARDKEEP_TLS=1)",
    )  # fmt: skip
    group.add_argument(
        "--server-ca", type=Path, metavar="PEM",
        help="CA the host's and relay's certificates chain to; implies TLS ($SHARDKEEP_SERVER_CA)",
    )  # fmt: skip
    group.add_argument(
        "--server-name", metavar="NAME",
        help="the name in the servers' certificates, if not the address ($SHARDKEEP_SERVER_NAME)",
    )  # fmt: skip
    group.add_argument(
        "--client-cert", type=Path, metavar="PEM",
        help="client certificate for mutual TLS ($SHARDKEEP_CLIENT_CERT)",
    )  # fmt: skip
    group.add_argument(
        "--client-key", type=Path, metavar="PEM",
        help="the client certificate's key ($SHARDKEEP_CLIENT_KEY)",
    )  # fmt: skip
    group.add_argument(
        "--api-token-file", type=Path, metavar="FILE",
        help=f"the host's API token ($SHARDKEEP_API_TOKEN_FILE, or the token in ${TOKEN_ENV})",
    )  # fmt: skip


def resolve_connection(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> None:
    """Fill unset connection settings in ``args`` from the environment, then the config file.

    Raises:
        InputError: an unreadable or malformed configuration file, or an
            unknown or mistyped key in it (named).
    """
    env = os.environ if environ is None else environ
    config, base = _read_config(args, env)
    for name, (variable, kind) in SETTINGS.items():
        if getattr(args, name, None) not in (None, False):
            continue
        value: Any = env.get(variable) or None
        origin = Path.cwd()
        if value is None and name in config:
            value, origin = config[name], base
        if value is None:
            continue
        if kind == "flag":
            value = _flag(name, value)
        elif not isinstance(value, str):
            raise InputError(f"{name} in the configuration file must be a string")
        elif kind == "path":
            value = origin / Path(value).expanduser()
        setattr(args, name, value)


def transport_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Transport:
    """The transport the resolved settings describe (call :func:`resolve_connection` first)."""
    from client.sdk.transport import Transport  # grpc: loaded only when a command connects

    env = os.environ if environ is None else environ
    return Transport.from_files(
        tls=bool(args.tls),
        server_ca=args.server_ca,
        client_cert=args.client_cert,
        client_key=args.client_key,
        api_token=None if args.api_token_file is not None else env.get(TOKEN_ENV) or None,
        api_token_file=args.api_token_file,
        server_name=args.server_name,
    )


def _read_config(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[dict[str, Any], Path]:
    path: Path | None = args.config or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    if path is None:
        state: Path | None = getattr(args, "state", None)
        default = (state or Path.home() / ".shardkeep") / "config.toml"
        if not default.is_file():
            return {}, Path.cwd()
        path = default
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot read the configuration file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"the configuration file {path} is not TOML: {e}") from None
    unknown = sorted(set(config) - set(SETTINGS))
    if unknown:
        raise InputError(f"unknown setting {unknown[0]!r} in the configuration file {path}")
    return config, path.parent


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no", ""):
        return value.lower() in ("1", "true", "yes")
    raise InputError(f"{name} must be true or false")
