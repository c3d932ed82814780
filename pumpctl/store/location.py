"""Where the embedded database lives: `sqlite:///<data dir>/pumpctl.db`.

The data directory is `PUMPCTL_DATA_DIR`, else `~/.local/share/pumpctl`; it is created when
missing, and must be writable (else `DataDirError`, one line naming the directory).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from pumpctl.places import DATA_DIR_ENV, data_dir
from pumpctl.store.errors import DataDirError

__all__ = ["DB_FILE", "configured_database_url", "default_database_url"]

DB_FILE = "pumpctl.db"


def _writable(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # the service's alone
        # a real file, not os.access: root passes every access check, a read-only mount does not
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise DataDirError(
            f"data directory {directory} is not writable ({why}); "
            f"set {DATA_DIR_ENV} or pass --database"
        ) from None


def default_database_url(environ: Mapping[str, str] | None = None) -> str:
    """`sqlite:///<data dir>/pumpctl.db`, the data directory created and checked writable."""
    directory = data_dir(environ)
    _writable(directory)
    return f"sqlite:///{(directory / DB_FILE).resolve()}"


def configured_database_url(database: str | None, data_directory: Path | None) -> str:
    """The `database` setting, else the SQLite file of `data_directory` (else of the default
    data directory): what `pumpctl serve` and `pumpctl db` open for the same settings."""
    if database:
        return database
    if data_directory is None:
        return default_database_url()
    return default_database_url({DATA_DIR_ENV: str(data_directory)})
