"""API keys and roles, pure: a key is configured by its SHA-256 digest, never itself."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    MERCHANT = "merchant"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the configured key's name and role."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(role: Role) -> str:
    """A fresh API key (shown once; only its digest is configured)."""
    return f"pk_{role.value}_{secrets.token_urlsafe(32)}"


def parse_keys(value: str) -> dict[str, Principal]:
    """`<name>:<role>:<sha256 hex>,...` as {digest: principal}; a clear error otherwise."""
    keys: dict[str, Principal] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            name, role, hexdigest = part.split(":")
            principal = Principal(name, Role(role))
        except ValueError:
            raise ValueError(
                "api_keys: <name>:<merchant|admin>:<sha256 hex of the key>, comma-separated"
            ) from None
        if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
            raise ValueError(f"api_keys: {name}: the digest must be 64 lower-case hex digits")
        if not name or any(p.name == name for p in keys.values()):
            raise ValueError(f"api_keys: key names must be unique and non-empty: {name!r}")
        keys[hexdigest] = principal
    return keys
