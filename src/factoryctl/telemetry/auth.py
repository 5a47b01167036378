"""How factoryctl authenticates to Prometheus: bearer token, basic auth, TLS.

Secrets come from a file or an environment variable, never from argv (visible to every
user in ``ps``) and never into logs or error messages: ``PromAuth`` holds only *where* a
secret is, and the secret itself is read when the HTTP client is built.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from factoryctl.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PromAuth:
    bearer_token_file: Path | None = None
    bearer_token_env: str | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    insecure_skip_verify: bool = False

    def headers(self) -> dict[str, str]:
        token = _secret("bearer token", self.bearer_token_file, self.bearer_token_env)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def basic(self) -> tuple[str, str] | None:
        if not self.username:
            return None
        password = _secret("password", self.password_file, self.password_env) or ""
        return (self.username, password)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What httpx takes as ``verify``: a context when anything differs from defaults."""
        if self.insecure_skip_verify:
            return False
        if self.ca_bundle is None and self.client_cert is None:
            return True
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_bundle) if self.ca_bundle else None)
            if self.client_cert is not None:
                ctx.load_cert_chain(
                    str(self.client_cert), str(self.client_key) if self.client_key else None
                )
        except (OSError, ssl.SSLError) as exc:
            # Name the file, not its contents.
            raise ConfigError(f"cannot load TLS files for Prometheus: {exc}") from None
        return ctx


def _secret(what: str, path: Path | None, env: str | None) -> str | None:
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read Prometheus {what} file {path}: {exc.strerror}"
            ) from None
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"Prometheus {what} variable ${env} is not set")
        return value.strip()
    return None
