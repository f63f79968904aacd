"""Where the dashboard may listen. It has no authentication (whoever reaches it can delete runs, queue sweeps and
start workers), so it listens on this machine's loopback address unless its user asks for another explicitly
(`lab dashboard --allow-remote`, which sets LAB_ALLOW_REMOTE=1 for the server). No streamlit here: the CLI refuses
an address before it starts the server, and dashboard.py refuses to serve pages on one it was started with.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

ALLOW_REMOTE_ENV = "LAB_ALLOW_REMOTE"
LOOPBACK = "127.0.0.1"
TUNNEL_HINT = "reach a remote dashboard through an SSH tunnel: ssh -L 8501:127.0.0.1:8501 HOST, then open http://127.0.0.1:8501"


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost. An empty address means every interface (streamlit's default
    without a config file), so it is not loopback; nor are 0.0.0.0, :: or any other host name."""
    if not address:
        return False
    text = address.strip().strip("[]")
    if text.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def remote_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the server was started with an explicit permission to listen beyond loopback."""
    return (os.environ if environ is None else environ).get(ALLOW_REMOTE_ENV, "") == "1"


def address_problem(address: str | None, allow_remote: bool) -> str | None:
    """The one line that refuses `address`, or None when the dashboard may listen there."""
    if is_loopback(address) or allow_remote:
        return None
    shown = repr(address) if address else "every interface (no server.address set)"
    return (f"The dashboard has no authentication, so it listens on {LOOPBACK} only, not on {shown}: "
            f"{TUNNEL_HINT}; or start it with `lab dashboard --allow-remote` to listen there anyway.")


def remote_warning(address: str | None) -> str:
    """What every page says when the dashboard listens beyond loopback with permission."""
    where = address or "every interface"
    return (f"This dashboard listens on {where} and has no authentication: anyone who reaches it can delete "
            f"runs, queue sweeps and start workers. Keep it on a private network, or {TUNNEL_HINT}.")
