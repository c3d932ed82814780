"""Who the web side runs as: never root, and a user of its own whenever the service can give it
one (docs/architecture.md, "Two processes").

Started as root (`pumpctl serve` as root, or `pumpctl web` as root), the web side becomes
`web_user` (default `nobody`) once it has loaded its code and before it listens: that user's
own group and no other, so it reaches the kernel's socket (0660, in that group, in a directory
of its own) and nothing else of the service: not the data directory, the database or a serial
line. Started as another user nothing can change users: the web side runs as that user, and a
`web_user` naming someone else is refused at start, naming the setting.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pumpctl.settings import Settings

__all__ = ["DEFAULT_WEB_USER", "WebUser", "WebUserError", "become", "socket_directory", "web_user"]

#: The user a web side started as root becomes when `web_user` is not set.
DEFAULT_WEB_USER = "nobody"
#: Where a private directory for the kernel's socket is made (root's; else the temporary one).
RUN_DIR = Path("/run")


class WebUserError(Exception):
    """The web side cannot run as asked; the message names the setting."""


@dataclass(frozen=True)
class WebUser:
    """The user the web side becomes."""

    name: str
    uid: int
    gid: int


def web_user(settings: Settings) -> WebUser | None:
    """The user a web side started by this process becomes; None: it stays this process's user
    (which is not root)."""
    wanted = settings.web_user
    if os.geteuid() != 0:
        if wanted is not None and _lookup(wanted).uid != os.geteuid():
            raise WebUserError(
                f"web_user: becoming {wanted!r} needs the service started as root; run the two "
                "systemd units (config/pumpctl-kernel.service, config/pumpctl-web.service) for "
                "a web side with a user of its own"
            )
        return None
    user = _lookup(wanted or DEFAULT_WEB_USER)
    if user.uid == 0 or user.gid == 0:
        raise WebUserError(f"web_user: {user.name!r} is root's; the web side never runs as root")
    return user


def _lookup(name: str) -> WebUser:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise WebUserError(f"web_user: no user {name!r} on this machine") from None
    return WebUser(name, entry.pw_uid, entry.pw_gid)


def become(user: WebUser) -> None:
    """Drop every right of root for good: `user`'s uid and group, no other group."""
    os.setgroups([])
    os.setgid(user.gid)
    os.setuid(user.uid)
    if (
        os.getuid() != user.uid
        or os.geteuid() != user.uid
        or os.getgroups() not in ([], [user.gid])
    ):
        raise WebUserError(f"web_user: could not become {user.name!r}")
    with contextlib.suppress(PermissionError):  # it must not be able to come back
        os.setuid(0)
        raise WebUserError(f"web_user: {user.name!r} could become root again")


def socket_directory(user: WebUser) -> Path:
    """A directory of its own for the kernel's socket, which `user`'s group may pass through
    and not list (0710, root's): the data directory stays closed to the web side."""
    base = RUN_DIR if os.access(RUN_DIR, os.W_OK) else None
    directory = Path(tempfile.mkdtemp(prefix="pumpctl-kernel-", dir=base))
    os.chown(directory, -1, user.gid)
    directory.chmod(0o710)
    return directory
