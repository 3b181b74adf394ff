"""Which hosts count as "this machine": the one rule for plain http (provider and remote alike)."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): traffic that never leaves this machine.

    Names under ``.localhost`` are not trusted: whether they resolve to loopback depends on the
    resolver, and a key sent over plain http must never depend on that.
    """
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
