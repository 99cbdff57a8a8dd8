"""Whether a host name or address is loopback: the one rule for open mode (no admin key), used
by `serve`'s bind check and the console's Host check."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
