"""The clients file (TOML) and trusted-proxy CIDRs, validated at startup.

::

    [[clients]]
    id = "web-frontend"
    key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    burst = 50000      # optional: this client's bucket size (points)
    per_s = 5000       # optional: points restored per second

Only the SHA-256 (hex) of each key is stored: ``printf %s "$KEY" | sha256sum``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.settings import ClientConfig

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CLIENT_KEYS = {"id": str, "key_sha256": str, "burst": int, "per_s": (int, float)}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def hash_key(key: str) -> str:
    """The SHA-256 hex digest the clients file stores for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_clients(path: Path) -> tuple[ClientConfig, ...]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"clients file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"clients file {path}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"clients file {path}: invalid TOML: {exc}") from None
    return parse_clients(data, origin=str(path))


def parse_clients(data: dict[str, Any], *, origin: str = "<clients>") -> tuple[ClientConfig, ...]:
    where = f"clients file {origin}"
    unknown = set(data) - {"clients"}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {sorted(unknown)}; expected [[clients]]")
    raw_clients = data.get("clients", [])
    if not isinstance(raw_clients, list):
        raise ConfigError(f"{where}: 'clients' must be an array of tables ([[clients]])")
    out: list[ClientConfig] = []
    ids: set[str] = set()
    hashes: set[str] = set()
    for index, raw in enumerate(raw_clients):
        label = f"{where}: client #{index + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{label}: must be a table")
        if isinstance(raw.get("id"), str):
            label = f"{where}: client {raw['id']!r}"
        bad = set(raw) - set(_CLIENT_KEYS)
        if bad:
            raise ConfigError(f"{label}: unknown key(s) {sorted(bad)}; allowed: {sorted(_CLIENT_KEYS)}")
        for key in ("id", "key_sha256"):
            if key not in raw:
                raise ConfigError(f"{label}: missing required key {key!r}")
        for key, value in raw.items():
            expected = _CLIENT_KEYS[key]
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ConfigError(f"{label}: key {key!r} has the wrong type ({value!r})")
        digest = raw["key_sha256"].lower()
        if not _HEX64.match(digest):
            raise ConfigError(f"{label}: key 'key_sha256' must be 64 hex digits (the SHA-256 of the key, not the key)")
        if raw["id"] in ids or not raw["id"]:
            raise ConfigError(f"{label}: key 'id': empty or duplicate id")
        if digest in hashes:
            raise ConfigError(f"{label}: key 'key_sha256': the same key is given to two clients")
        for key in ("burst", "per_s"):
            if key in raw and raw[key] <= 0:
                raise ConfigError(f"{label}: key {key!r} must be > 0, got {raw[key]}")
        ids.add(raw["id"])
        hashes.add(digest)
        per_s = raw.get("per_s")
        out.append(ClientConfig(raw["id"], digest, raw.get("burst"), float(per_s) if per_s is not None else None))
    return tuple(out)


def parse_cidrs(values: Iterable[str]) -> tuple[Network, ...]:
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(f"GATEWAY_TRUSTED_PROXIES: {value!r} is not an IP address or CIDR") from None
    return tuple(out)
