"""A TCP proxy on loopback that a test can cut and restore: a real network drop between a
client (the browser) and a server that keeps running. It keeps the head of every request it
carried, so a test can read the headers a client sent (e.g. `Last-Event-ID` on a reconnect),
and it can go silent (`freeze`): a network that drops every packet and closes nothing.
`SlowProxy` delays what the server sends instead (a slow database or network)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target`."""

    port: int
    target: int
    heads: list[bytes] = field(default_factory=list)
    frozen: bool = False
    _server: asyncio.Server | None = None
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def open(self) -> None:
        """Listen (again) on the same port."""
        self._server = await asyncio.start_server(
            self._carry, "127.0.0.1", self.port, reuse_address=True
        )

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await asyncio.gather(*list(self._handlers), return_exceptions=True)

    def freeze(self) -> None:
        """Carry nothing more in either direction (bytes are dropped) and close nothing."""
        self.frozen = True

    def thaw(self) -> None:
        """Carry again what comes from now on (what was dropped stays lost)."""
        self.frozen = False

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._carry_on(reader, writer)
        finally:
            self._handlers.discard(handler)

    async def _carry_on(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        down = asyncio.create_task(self._pipe(reader, up_writer, record=True))
        up = asyncio.create_task(self._pipe(up_reader, writer, record=False))
        self._pipes |= {down, up}
        try:
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
            self._pipes -= {down, up}
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, record: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                if self.frozen:
                    continue
                if record and chunk[:4] in {b"GET ", b"POST", b"PUT ", b"DELE"}:
                    self.heads.append(chunk.split(b"\r\n\r\n", 1)[0])
                writer.write(chunk)
                await writer.drain()


@dataclass
class SlowProxy:
    """127.0.0.1:`port` -> 127.0.0.1:`target`; every chunk the server sends arrives `delay_s`
    late (latency, not bandwidth: chunks keep their order, and a change of `delay_s` applies to
    what arrives from then on). tests/helpers/tcp_proxy.py can cut or freeze, not delay."""

    port: int
    target: int
    delay_s: float = 0.0
    both_ways: bool = False  # what the client sends comes late too
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def __aenter__(self) -> SlowProxy:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                writer.transport.abort()
                return
            self._writers |= {writer, up_writer}
            pipes = {
                asyncio.create_task(self._pipe(reader, up_writer, late=self.both_ways)),
                asyncio.create_task(self._pipe(up_reader, writer, late=True)),
            }
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
                for w in (writer, up_writer):
                    self._writers.discard(w)
                    w.transport.abort()
        finally:
            self._handlers.discard(handler)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, late: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def receive() -> None:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(65536):
                    chunks.put_nowait((loop.time() + (self.delay_s if late else 0.0), chunk))
            chunks.put_nowait(None)

        receiving = asyncio.create_task(receive())
        try:
            with contextlib.suppress(OSError):
                while (item := await chunks.get()) is not None:
                    due, chunk = item
                    if (wait := due - loop.time()) > 0:
                        await asyncio.sleep(wait)  # the fault itself: the answer comes late
                    writer.write(chunk)
                    await writer.drain()
        finally:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
