"""A byte relay from a loopback TCP port to kioskd's control socket, for tools that speak HTTP
over TCP only (schemathesis). Each TCP connection gets its own Unix connection, so kioskd sees
this process's credentials (SO_PEERCRED): run it as a user on the control allowlist (root).

    python3 relay.py UNIX_SOCKET [PORT_FILE]

Listens on 127.0.0.1 on a free port; writes the port to PORT_FILE (else standard output) once it
accepts connections. Runs until SIGTERM or SIGINT."""
from __future__ import annotations

import asyncio
import os
import signal
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        # Half-close: the other side sees the end of the request or answer, as it would directly.
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def serve(path: str, port_file: str | None) -> None:
    async def handle(tcp_reader: asyncio.StreamReader, tcp_writer: asyncio.StreamWriter) -> None:
        try:
            unix_reader, unix_writer = await asyncio.open_unix_connection(path)
        except OSError as error:
            print(f"[relay] cannot connect to {path}: {error}", file=sys.stderr)
            tcp_writer.close()
            return
        try:
            await asyncio.gather(pipe(tcp_reader, unix_writer), pipe(unix_reader, tcp_writer))
        finally:
            for writer in (unix_writer, tcp_writer):
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    if port_file:
        with open(port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(port_file + ".tmp", port_file)
    else:
        print(port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    asyncio.run(serve(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
