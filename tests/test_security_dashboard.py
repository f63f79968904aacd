"""The dashboard has no authentication: it listens on loopback, and refuses another address unless allowed."""
import os
import socket
import subprocess
import sys

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from conftest import ROOT, wait_for
from lab.dashboard_address import ALLOW_REMOTE_ENV, address_problem, is_loopback


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("", False), (None, False), ("192.168.1.4", False), ("example.org", False),
])
def test_which_addresses_are_loopback(address, loopback):
    assert is_loopback(address) is loopback
    assert (address_problem(address, allow_remote=False) is None) is loopback
    assert address_problem(address, allow_remote=True) is None


def test_the_refusal_is_one_line_that_names_the_tunnel_and_the_option():
    problem = address_problem("0.0.0.0", allow_remote=False)
    assert "\n" not in problem and "'0.0.0.0'" in problem and "ssh -L" in problem and "--allow-remote" in problem


@pytest.fixture
def server_address():
    """Set streamlit's server.address for an AppTest run in this process; restored afterwards."""
    before = st_config.get_option("server.address")
    yield lambda value: st_config.set_option("server.address", value)
    st_config.set_option("server.address", before)


@pytest.mark.parametrize("address", ["0.0.0.0", None])
def test_the_dashboard_refuses_to_serve_pages_beyond_loopback(store, server_address, monkeypatch, address):
    monkeypatch.delenv(ALLOW_REMOTE_ENV, raising=False)
    server_address(address)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=180).run()
    assert not at.exception
    assert len(at.error) == 1 and "no authentication" in at.error[0].value
    assert not at.title  # no page ran


def test_an_allowed_remote_dashboard_warns_on_every_page(store, server_address, monkeypatch):
    monkeypatch.setenv(ALLOW_REMOTE_ENV, "1")
    server_address("0.0.0.0")
    for name in ("launch", "runs"):
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=180)
        at.switch_page(f"pages/{name}.py")
        at.run()
        assert not at.exception
        assert any("no authentication" in w.value for w in at.warning), name


def test_a_loopback_dashboard_shows_no_warning(store, server_address, monkeypatch):
    monkeypatch.delenv(ALLOW_REMOTE_ENV, raising=False)
    server_address("127.0.0.1")
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=180).run()
    assert not at.exception and not at.error
    assert not any("no authentication" in w.value for w in at.warning)
    assert at.title[0].value == "Launch experiments"


def listening_addresses(port: int) -> set[str]:
    """The local addresses a socket in LISTEN state holds `port` on (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads the listening address from /proc/net/tcp")
def test_a_dashboard_started_from_another_folder_listens_on_loopback_only(tmp_path):
    port = free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_") and k != ALLOW_REMOTE_ENV}
    env["HOME"] = str(tmp_path)  # no ~/.streamlit/config.toml of the user's
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard.py"),
                               "--server.port", str(port), "--server.headless", "true"],
                              cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        addresses = wait_for(lambda: listening_addresses(port) or server.poll() is not None, 120,
                             f"the dashboard to listen on port {port}")
        assert server.poll() is None, "the dashboard exited"
        assert addresses == {"127.0.0.1"}
    finally:
        server.terminate()
        server.wait(30)
