"""`pumpctl serve` (the gateway service) and `pumpctl demo` (the same service on embedded
defaults: SQLite in a temporary data directory, simulated serial pumps, a scaled clock).

Every option is also a `PUMPCTL_*` setting (pumpctl/settings.py); the command line wins.
`serve` refuses to start without tokens; only the demo makes its own, and prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError

from api.app import API_PREFIX, create_app
from pumpctl import sdnotify
from pumpctl.cli.configured import SettingsError, settings_for, validation_message
from pumpctl.cli.options import (
    ConfigOption,
    HostOption,
    KernelSocketOption,
    PortOption,
    fail,
    start_logging,
)
from pumpctl.cli.progress import waiting
from pumpctl.cli.server import Server
from pumpctl.cli.webchild import WebChild, WebStartError
from pumpctl.cli.webuser import WebUser, WebUserError, socket_directory, web_user
from pumpctl.controller.ward import Ward
from pumpctl.credentials import new_token
from pumpctl.places import KERNEL_SOCKET_NAME, kernel_socket_path
from pumpctl.settings import DEFAULT_PORT, Role, Settings, TokenEntry
from pumpctl.store import DataDirError, StoreError
from pumpctl.tls import plain_bind_refusal

__all__ = ["demo", "serve"]

_log = logging.getLogger("pumpctl.cli")


class ServiceStartError(Exception):
    """The service could not start; the message says why in one line."""


class _StartupTraceback(logging.Filter):
    """Drops uvicorn's traceback of a startup failure the service explains itself (a pump that
    cannot be opened): the operator gets one line naming the pump, not a traceback."""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        explained = getattr(self.app.state, "startup_error", None) is not None
        return not (explained and str(record.msg).startswith("Traceback"))


class _Server(Server):
    """The kernel's server, which tells systemd "STOPPING=1" as soon as it is asked to stop."""

    stopping_sent = False

    def announce_stopping(self) -> None:
        if not self.stopping_sent:
            self.stopping_sent = True
            sdnotify.notify("STOPPING=1")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.announce_stopping()  # SIGTERM from `systemctl stop`: shutdown begins now
        super().handle_exit(sig, frame)


def kernel_listener(path: Path, group: int | None = None) -> socket.socket:
    """The kernel's Unix socket at `path`, for the service's own users only (0660, in `group`
    when given; its directory is the data or runtime directory or one of its own, not
    world-writable); a stale one is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)  # never a moment with wider permissions
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, 0o660)
    return listener


def _socket_place(settings: Settings, user: WebUser | None) -> tuple[Path, Path | None]:
    """Where the kernel's socket goes, and the directory made for it (None: not one of its
    own). A web side that becomes another user gets a directory of its own to reach it
    through, never the data directory."""
    own_directory = None
    if user is not None and settings.kernel_socket is None:
        own_directory = socket_directory(user)
        path = own_directory / KERNEL_SOCKET_NAME
    else:
        path = kernel_socket_path(settings)
    _log.info(
        "kernel: serving the web side on %s%s",
        path,
        "" if user is None else f" (the web side runs as {user.name})",
    )
    return path, own_directory


def _web_user(settings: Settings) -> WebUser | None:
    try:
        return web_user(settings)
    except WebUserError as error:
        raise ServiceStartError(str(error)) from None


def _remove_socket(path: Path, own_directory: Path | None) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
    if own_directory is not None:
        with contextlib.suppress(OSError):
            own_directory.rmdir()


async def _run(settings: Settings, on_ready: Any = None, *, web: bool = True) -> None:
    """The kernel until SIGINT/SIGTERM, its API on a Unix socket only, and (with `web`) the web
    side as a child it supervises; `on_ready(app)` once both answer.

    Under systemd (config/pumpctl*.service) it sends READY=1 once the service answers, feeds the
    watchdog from the kernel's event loop while it serves, and sends STOPPING=1 when it begins
    to stop.
    """
    user = _web_user(settings) if web else None
    app = create_app(settings)
    quiet = _StartupTraceback(app)
    logging.getLogger("uvicorn.error").addFilter(quiet)
    path, own_directory = _socket_place(settings, user)
    listener = kernel_listener(path, None if user is None else user.gid)
    # no access log: the web side logs every request it passes (the kernel's would repeat it)
    config = uvicorn.Config(app, uds=str(path), log_config=None, lifespan="on", access_log=False)
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]), name="kernel")
    watchdog: asyncio.Task[None] | None = None
    child = WebChild(settings, path) if web else None
    supervising: asyncio.Task[None] | None = None
    web_failed: str | None = None
    try:
        pumps = settings.simulate or len(settings.pumps)
        with waiting(f"pumpctl: starting the service ({pumps} pump(s), store, recovery)"):
            while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
                await asyncio.sleep(0.05)
            if server.started and child is not None:
                try:
                    await child.start()
                except WebStartError as error:
                    web_failed = str(error)
                    server.should_exit = True  # the kernel ends in order, its store closed
                else:
                    supervising = asyncio.create_task(child.supervise(), name="web side")
        if server.started and web_failed is None:
            sdnotify.notify("READY=1")
            watchdog = sdnotify.start_watchdog()
            if on_ready is not None:
                await on_ready(app)
        await serving
    finally:
        server.announce_stopping()
        if child is not None:
            await child.stop()
        for task in (watchdog, supervising):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        _remove_socket(path, own_directory)
    if web_failed is not None:
        raise ServiceStartError(web_failed)
    if not server.started:
        raise ServiceStartError(
            getattr(app.state, "startup_error", None)
            or "the service did not start (see the log above)"
        )


def serve(  # noqa: PLR0917 - typer: one parameter per option
    config: ConfigOption = None,
    host: HostOption = None,
    port: PortOption = None,
    database: Annotated[
        str | None,
        typer.Option(envvar="PUMPCTL_DATABASE_URL", help="sqlite:///PATH or postgresql://..."),
    ] = None,
    pump: Annotated[
        list[str] | None,
        typer.Option(
            help="A pump, ID=URL: serial:///dev/ttyUSB0?address=0&safe=N or mqtt://HOST:1883/ID."
        ),
    ] = None,
    clock: Annotated[
        str | None, typer.Option(help="real (default), scaled:F or virtual (simulators only).")
    ] = None,
    bench: Annotated[
        bool | None,
        typer.Option(
            "--bench", help="The pumps on the far side are simulators (an engineer's bench)."
        ),
    ] = None,
    simulate: Annotated[
        int | None, typer.Option(min=0, max=100, help="Run against N simulated pumps.")
    ] = None,
    link: Annotated[
        str | None,
        typer.Option(
            help="Simulated pumps over serial, mqtt, or memory (in process, no wire: for"
            " rule-level tests and demos; it proves nothing about a transport)."
        ),
    ] = None,
    broker: Annotated[str | None, typer.Option(help="MQTT broker HOST:PORT.")] = None,
    kernel_socket: KernelSocketOption = None,
    web: Annotated[
        bool,
        typer.Option(
            "--web/--no-web",
            help="Run the web side too (a child process); --no-web: the kernel alone, for "
            "its own systemd unit beside `pumpctl web`.",
        ),
    ] = True,
) -> None:
    """The gateway service: the kernel (pumps, rules, store) and the web side (REST API, live
    events, the nurse station page), each in a process of its own."""
    for entry in pump or ():
        if "=" not in entry:  # else pydantic's "pumps.0: Input should be a valid dictionary"
            raise fail("serve", f"--pump {entry!r}: give ID=URL, e.g. pump-1=serial:///dev/ttyUSB0")
    try:
        settings = settings_for(
            config,
            host=host,
            port=port,
            database=database,
            pumps=pump or None,
            clock=clock,
            bench=bench,
            simulate=simulate,
            link=link,
            broker=broker,
            kernel_socket=kernel_socket,
        )
    except SettingsError as exc:
        raise fail("serve", str(exc)) from None
    if not settings.api_tokens:  # personal accounts and their tokens only (pumpctl user)
        _log.info("no API tokens configured: sign-in with the accounts of `pumpctl user`")
    if web and (refusal := plain_bind_refusal(settings)) is not None:
        raise fail("serve", refusal)  # before anything opens: no pump, no store
    if not settings.pumps and not settings.simulate:
        _log.warning("no pumps configured (--pump ID=URL, [[pumps]], or --simulate N)")
    start_logging(settings)
    _serve_or_fail("serve", settings, web=web)


def _serve_or_fail(
    command: str, settings: Settings, on_ready: Any = None, *, web: bool = True
) -> None:
    try:
        asyncio.run(_run(settings, on_ready, web=web))
    except (DataDirError, StoreError, ServiceStartError) as exc:
        raise fail(command, str(exc)) from None
    except KeyboardInterrupt:
        pass


def _free_port(host: str, wanted: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind((host, wanted))
        except OSError:
            probe.bind((host, 0))
        return int(probe.getsockname()[1])


def demo(
    pumps: Annotated[int, typer.Option(min=1, max=20, help="Simulated pumps.")] = 3,
    speed: Annotated[
        float, typer.Option(min=1, max=3600, help="Clinical seconds per real second.")
    ] = 120.0,
    port: Annotated[int, typer.Option(help="Port (a free one when it is taken).")] = DEFAULT_PORT,
) -> None:
    """The service on embedded defaults: simulated serial pumps, SQLite in a temporary data
    directory, a scaled clock, tokens made up and printed. A patient's first infusion starts on
    the first pump. Ctrl-C ends it."""
    configured = os.environ.get("PUMPCTL_DATA_DIR", "").strip()
    try:
        data = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="pumpctl-demo-"))
        data.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data):
            pass
    except OSError as exc:
        where = configured or tempfile.gettempdir()
        raise fail(
            "demo", f"data directory {where} is not writable ({exc.strerror or exc})"
        ) from None
    tokens = {new_token(): TokenEntry(name=f"demo-{r.value}", role=r) for r in Role}
    chosen = _free_port("127.0.0.1", port)
    try:
        settings = Settings(
            host="127.0.0.1",
            port=chosen,
            data_dir=data,
            database=f"sqlite:///{data / 'pumpctl.db'}",
            clock=f"scaled:{speed:g}",
            simulate=pumps,
            link="serial",
            api_tokens=tokens,
        )
    except ValidationError as exc:
        raise fail("demo", validation_message(exc)) from None
    start_logging(settings.model_copy(update={"log_level": "warning"}))
    url = f"http://127.0.0.1:{chosen}/"
    typer.echo(f"pumpctl demo: the nurse station page is at {url} (sign in with a token below)")
    if port == 0:
        typer.echo(f"  (port 0: the free port {chosen} was chosen)")
    elif chosen != port:
        typer.echo(f"  (port {port} is taken; using {chosen})")
    typer.echo(f"  API docs: {url}docs   health: {url}api/v1/health")
    typer.echo(f"  data directory: {data} (SQLite), clock: {speed:g}x, {pumps} simulated pumps")
    typer.echo("  tokens (one per role: the page's 'Access token', or /docs's 'Authorize'):")
    for token, entry in tokens.items():
        typer.echo(f"    {entry.role.value:<9} {token}")
    typer.echo(f'  try: curl -H "Authorization: Bearer TOKEN" {url}{API_PREFIX[1:]}/pumps')
    typer.echo("  Ctrl-C stops the demo.")

    async def first_infusion(app: Any) -> None:
        ward: Ward = app.state.ward
        actor = "demo-clinician"
        patient_id, _course = await ward.create_patient("DEMO-0001", 70.0, None, actor=actor)
        pump_id = next(iter(ward.supervisors))
        infusion_id = await ward.create_infusion(patient_id, pump_id, actor=actor)
        window = ward.protocols(ward.default_protocol).premedication
        given = ward.clock.now() - timedelta(
            minutes=(window.window_min_min + window.window_max_min) / 2
        )
        await ward.record_premedication(infusion_id, given, actor="demo-nurse")
        await ward.start(infusion_id, actor=actor)
        typer.echo(f"  infusion {infusion_id} started on {pump_id}: 50 ml/h, +50 every hour")

    _serve_or_fail("demo", settings, first_infusion)
