"""Who the web side runs as (pumpctl/cli/webuser.py), where the test cannot be another user:
started by a user that is not root, `pumpctl serve` cannot change users, so its web side stays
that user and a `web_user` naming someone else is refused naming the setting. (This machine's
tests run as root, whose interpreter other users cannot run; the process under root is shown by
tests/faults/test_web_side.py and tests/cli/test_serve_refusals.py.)"""

from __future__ import annotations

import pwd

import pytest

from pumpctl.cli import webuser
from pumpctl.cli.webuser import WebUserError, web_user
from pumpctl.settings import Settings


def _as_uid(monkeypatch: pytest.MonkeyPatch, uid: int) -> None:
    monkeypatch.setattr(webuser.os, "geteuid", lambda: uid)


def test_not_root_the_web_side_stays_the_services_user(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    _as_uid(monkeypatch, nobody)
    assert web_user(Settings()) is None
    assert web_user(Settings(web_user="nobody")) is None  # that is who it is


def test_not_root_becoming_another_user_is_refused_naming_web_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _as_uid(monkeypatch, pwd.getpwnam("nobody").pw_uid)
    with pytest.raises(WebUserError, match=r"^web_user: becoming 'root' needs the service"):
        web_user(Settings(web_user="root"))


def test_as_root_the_default_is_nobody_and_root_is_never_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _as_uid(monkeypatch, 0)
    user = web_user(Settings())
    assert user is not None
    assert (user.name, user.uid) == ("nobody", pwd.getpwnam("nobody").pw_uid)
    with pytest.raises(WebUserError, match="never runs as root"):
        web_user(Settings(web_user="root"))
