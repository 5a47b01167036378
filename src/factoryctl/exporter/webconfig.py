"""TLS and basic auth from a Prometheus web-config file (the exporter-toolkit format).

Supported keys::

    tls_server_config:
      cert_file: server.crt        # relative paths are relative to the config file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default)
      client_ca_file: ca.crt
      min_version: TLS12           # or TLS13
    basic_auth_users:
      prometheus: $2y$10$...       # bcrypt hash, as `htpasswd -nBC 10 "" | tr -d ':\\n'` prints

Everything is checked at startup, before the port is bound: a missing file or an unknown
key is a one-line configuration error, never a half-started server.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factoryctl.errors import ConfigError

_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}
_CLIENT_AUTH = {"NoClientCert", "RequireAndVerifyClientCert", "VerifyClientCertIfGiven"}
_MIN_VERSION = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    _ok: set[tuple[str, bytes]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, authorization: str | None) -> bool:
        """True if no users are configured or the Basic credentials match one."""
        if not self.users:
            return True
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        # bcrypt costs ~50 ms by design; remember good credentials (by digest, never in
        # clear) so a 1 s scrape interval does not spend a core on hashing.
        digest = hashlib.sha256(password.encode()).digest()
        with self._lock:
            if (user, digest) in self._ok:
                return True
        import bcrypt

        if bcrypt.checkpw(password.encode(), hashed):
            with self._lock:
                self._ok.add((user, digest))
            return True
        return False


def _path(base: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"web config: {key} must be a file path")
    path = base / value
    if not path.is_file():
        raise ConfigError(f"web config: {key} {path}: no such file")
    return path


def load_web_config(path: Path) -> WebConfig:
    try:
        import yaml

        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"web config {path}: {exc.strerror}") from None
    except Exception as exc:
        raise ConfigError(
            f"web config {path}: not valid YAML ({str(exc).splitlines()[0]})"
        ) from None
    doc = doc or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"web config {path}: expected a mapping at the top")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"web config {path}: unknown key {sorted(unknown)[0]!r}")
    base = path.parent
    config = WebConfig()
    tls = doc.get("tls_server_config")
    if tls:
        config.ssl_context = _ssl_context(tls, base)
    users = doc.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError("web config: basic_auth_users must map user names to bcrypt hashes")
    if users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise ConfigError("web config: basic_auth_users needs the bcrypt module") from None
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith("$2"):
            raise ConfigError(f"web config: basic_auth_users.{user} is not a bcrypt hash")
        config.users[str(user)] = hashed.encode()
    return config


def _ssl_context(tls: Any, base: Path) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise ConfigError("web config: tls_server_config must be a mapping")
    unknown = set(tls) - _TLS_KEYS
    if unknown:
        raise ConfigError(f"web config: unknown key tls_server_config.{sorted(unknown)[0]}")
    cert = _path(base, tls.get("cert_file"), "cert_file")
    key = _path(base, tls.get("key_file"), "key_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _MIN_VERSION.get(
        str(tls.get("min_version", "TLS12")), ssl.TLSVersion.TLSv1_2
    )
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"web config: cannot load {cert} / {key}: {exc}") from None
    auth = str(tls.get("client_auth_type", "NoClientCert"))
    if auth not in _CLIENT_AUTH:
        raise ConfigError(
            f"web config: client_auth_type {auth!r} is not one of {sorted(_CLIENT_AUTH)}"
        )
    if auth != "NoClientCert":
        ca = _path(base, tls.get("client_ca_file"), "client_ca_file")
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = (
            ssl.CERT_REQUIRED if auth == "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL
        )
    return ctx
