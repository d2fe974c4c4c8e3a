"""Fixtures: a real `kioskd serve` for the whole run (the binary: $KIOSKD_BIN, as
scripts/test-python.sh sets it), clients of it, and proxies that break connections."""
from __future__ import annotations

import os
import pathlib
from typing import Iterator

import pytest

from kioskd import AsyncKioskd, Kioskd
from kioskd.testing import KioskdProcess

from proxy import Proxy

HERE = pathlib.Path(__file__).resolve().parent


def openapi_path() -> pathlib.Path:
    """The document the models are checked against: $KIOSKD_OPENAPI, else the repository's."""
    path = os.environ.get("KIOSKD_OPENAPI") or HERE.parents[2] / "Sources" / "Control" / "API" / "openapi.json"
    return pathlib.Path(path)


def kioskd_binary() -> str:
    path = os.environ.get("KIOSKD_BIN")
    if not path:
        pytest.fail("set KIOSKD_BIN to a kioskd binary (scripts/test-python.sh does)", pytrace=False)
    return path


def start_daemon(displays: str, ports: str) -> KioskdProcess:
    return KioskdProcess(kioskd_binary(), displays=displays, ports=ports).start()


def stop_daemon(daemon: KioskdProcess) -> None:
    code = daemon.stop()
    log = daemon.log()
    daemon.remove()
    assert code == 0, f"kioskd exited with {code}:\n{log}"


@pytest.fixture(scope="session")
def daemon() -> Iterator[KioskdProcess]:
    """One daemon for the run; tests that drain get their own (test_drain.py)."""
    process = start_daemon(displays="600-629", ports="30000-30299")
    yield process
    stop_daemon(process)


@pytest.fixture
def client(daemon: KioskdProcess) -> Iterator[Kioskd]:
    with daemon.client() as c:
        yield c


@pytest.fixture
async def aclient(daemon: KioskdProcess):
    async with daemon.async_client() as c:
        yield c


@pytest.fixture
def proxy(daemon: KioskdProcess) -> Iterator[Proxy]:
    p = Proxy(daemon.socket, listen=os.path.join(daemon.directory, "proxy.sock"))
    yield p
    p.close()


@pytest.fixture
def tcp_proxy(daemon: KioskdProcess) -> Iterator[Proxy]:
    p = Proxy(daemon.socket)
    yield p
    p.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
