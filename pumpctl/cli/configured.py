"""The settings a command runs on, or one line saying which setting is wrong.

`serve`, `demo` and `db` read the same sources (pumpctl/settings.py: defaults < `--config` <
`PUMPCTL_*` < the command line), so `pumpctl db upgrade --config FILE` migrates the very
database that `pumpctl serve --config FILE` opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pumpctl.settings import Settings, load_settings

__all__ = ["SettingsError", "settings_for", "validation_message"]


class SettingsError(Exception):
    """A setting that cannot be used; the message names it, in one line."""


def validation_message(exc: ValidationError) -> str:
    """The first error of `exc` as `field: what is wrong`."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "settings"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


def settings_for(
    config: Path | None, *, only: frozenset[str] | None = None, **overrides: Any
) -> Settings:
    """`load_settings(config, only=only, **overrides)`; a bad value is a `SettingsError`
    naming it."""
    try:
        return load_settings(config, only=only, **overrides)
    except ValidationError as exc:
        raise SettingsError(validation_message(exc)) from None
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
