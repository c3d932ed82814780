"""Architecture: arrows are imports and nothing points upward (architecture.md, "Layers").

Each rule is a function from a module's imports to its violations, run over the tree and, to
show that it can fail, over a synthetic source that breaks it. Imports are read with `ast`
(relative ones resolved, `from pkg import name` counted as `pkg.name` too, imports under
`if TYPE_CHECKING:` included): a layer that names a module has a dependency on it. The web
side's rule (it loads none of the kernel's stack) is measured instead: what a fresh interpreter
has loaded once it has built the web side, transitive imports and imports inside functions
included.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from api.accesslog import KERNEL_ROUTE_WORDS, kernel_route_words

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)
#: Standard modules that do I/O or touch time: never in the rules core.
IO_MODULES = {"asyncio", "socket", "subprocess", "os", "io", "pathlib", "time", "sqlite3"}
#: What the rules core must never import: the layers above it and the world outside.
CORE_FORBIDDEN = (
    "drivers",
    "simulator",
    "api",
    "pumpctl.controller",
    "pumpctl.store",
    "pumpctl.cli",
    *sorted(IO_MODULES),
)
#: The only modules that may import the simulator: the command line and the service's simulation
#: package (api/sim: the simulated pumps of `--simulate N` and the admin's simulation routes).
SIMULATOR_IMPORTERS = re.compile(r"pumpctl\.cli(\..+)?|api\.sim(\..+)?")
#: What the web side's process never loads: the kernel's stack (architecture.md, "Two
#: processes": it starts without its cost, and cannot touch the store even by mistake).
KERNEL_STACK = ("sqlalchemy", "alembic", "pumpctl.store", "pumpctl.controller", "drivers")
#: The web side's own app and HTTP client, which the kernel's process never loads.
WEB_SIDE_APP = frozenset({"api.web", "httpx"})
#: The web side as its process starts: `pumpctl web`'s command line, and the app it serves.
WEB_SIDE = """
from pathlib import Path
import api.web
from pumpctl.cli import build
from pumpctl.settings import Settings
build("web")
api.web.create_web_app(Settings(), Path("kernel.sock"))
"""


def module_name(path: Path) -> str:
    """The dotted name of the module at `path` (a package's `__init__.py` is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module the source of `module` imports."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            parent = parts[: len(parts) - node.level + 1] if node.level else []
            name = ".".join([*parent, *([node.module] if node.module else [])])
            if name:
                found.add(name)
            found.update(".".join(p for p in (name, alias.name) if p) for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    """What the module at `path` imports (see `imports_in`)."""
    source = path.read_text(encoding="utf-8")
    return imports_in(source, module_name(path), is_package=path.name == "__init__.py")


def within(name: str, prefix: str) -> bool:
    """True when `name` is the module `prefix` or inside it."""
    return name == prefix or name.startswith(prefix + ".")


def modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def loaded_by(code: str) -> set[str]:
    """Every module a fresh interpreter has loaded once it has run `code` (no PUMPCTL_* setting
    of this process reaches it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    listed = "\nimport sys\nprint(*sys.modules, sep='\\n')\n"
    run = subprocess.run(
        [sys.executable, "-c", code + listed],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


# -- the rules -------------------------------------------------------------------------------


def core_violations(imports: set[str]) -> list[str]:
    """The rules core imports the standard library (no I/O), pydantic and itself."""
    bad = []
    for name in sorted(imports):
        top = name.split(".")[0]
        if any(within(name, forbidden) for forbidden in CORE_FORBIDDEN):
            bad.append(f"{name} (a layer above the core, or I/O)")
        elif top not in (STDLIB | {"pydantic", "pumpctl"}):
            bad.append(f"{name} (not the standard library, pydantic or the core)")
        elif top == "pumpctl" and name != "pumpctl" and not within(name, "pumpctl.core"):
            bad.append(f"{name} (pumpctl outside the core)")
    return bad


def driver_violations(imports: set[str]) -> list[str]:
    """Drivers import nothing of pumpctl, the simulator or the API."""
    return sorted(n for n in imports if n.split(".")[0] in {"pumpctl", "simulator", "api"})


def simulator_violations(imports: set[str]) -> list[str]:
    """The simulator uses the drivers and pumpctl's clock, nothing else of ours."""
    return sorted(
        n
        for n in imports
        if within(n, "api")
        or (within(n, "pumpctl") and n != "pumpctl" and not within(n, "pumpctl.clock"))
    )


def simulator_importer_violations(module: str, imports: set[str]) -> list[str]:
    """Only the command line and the simulation routes import the simulator."""
    if SIMULATOR_IMPORTERS.fullmatch(module):
        return []
    return sorted(n for n in imports if within(n, "simulator"))


def kernel_stack_violations(loaded: set[str]) -> list[str]:
    """The web side's process loads nothing of the kernel's stack."""
    return sorted(n for n in loaded if any(within(n, kernel) for kernel in KERNEL_STACK))


# -- over the tree ---------------------------------------------------------------------------


def test_clock_imports_only_the_standard_library() -> None:
    bad = {m for m in imports_of(ROOT / "pumpctl/clock.py") if m.split(".")[0] not in STDLIB}
    assert bad == set()


@pytest.mark.parametrize("path", modules("pumpctl/core"), ids=ids)
def test_rules_core_is_pure(path: Path) -> None:
    assert core_violations(imports_of(path)) == []


@pytest.mark.parametrize("path", modules("drivers"), ids=ids)
def test_drivers_import_nothing_of_pumpctl(path: Path) -> None:
    assert driver_violations(imports_of(path)) == []


@pytest.mark.parametrize("path", modules("simulator"), ids=ids)
def test_simulator_uses_only_drivers_and_the_clock(path: Path) -> None:
    assert simulator_violations(imports_of(path)) == []


@pytest.mark.parametrize("path", modules("pumpctl", "api", "drivers"), ids=ids)
def test_only_the_command_line_and_simulation_routes_import_the_simulator(path: Path) -> None:
    assert simulator_importer_violations(module_name(path), imports_of(path)) == []


def test_the_web_side_loads_none_of_the_kernels_stack() -> None:
    loaded = loaded_by(WEB_SIDE)
    assert {"pumpctl.cli.web", "api.web", "api.fanout", "uvicorn"} <= loaded  # it ran
    assert kernel_stack_violations(loaded) == []


def test_the_kernel_loads_none_of_the_web_sides_app() -> None:
    """The kernel starts its web side as a child (pumpctl/cli/webchild.py) without loading the
    app that child serves: api/web.py and its HTTP client are about 50 ms of every kernel's
    start (`python -X importtime`), spent for nothing."""
    assert "api.web" in loaded_by(WEB_SIDE)  # the rule's modules exist and are found
    loaded = loaded_by("import pumpctl.cli.serve")
    assert "api.app" in loaded  # it ran
    assert sorted(loaded & WEB_SIDE_APP) == []


def test_the_web_side_knows_the_kernels_route_words_without_its_routes() -> None:
    """api/accesslog.py names them for the web side; a route with a new word goes there too."""
    assert kernel_route_words() == KERNEL_ROUTE_WORDS


def test_the_scans_see_the_layers() -> None:
    """A moved folder must not leave a rule checking nothing."""
    assert len(modules("pumpctl/core")) >= 5
    assert len(modules("drivers")) >= 5
    assert len(modules("simulator")) >= 3
    assert ROOT / "pumpctl/cli/simulate.py" in modules("pumpctl")


# -- each rule can fail ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "from drivers.base import Pump",
        "import simulator.model",
        "from api import app",
        "from pumpctl.controller import Controller",
        "from pumpctl import store",
        "from pumpctl.cli.main import main",
        "from ...cli import main",
        "from .... import api",
        "from pumpctl.clock import Clock",
        "import aiomqtt",
        "if TYPE_CHECKING:\n    from drivers.base import Pump",
    ],
)
def test_core_rule_detects_a_violation(source: str) -> None:
    assert core_violations(imports_in(source, "pumpctl.core.machine.events")) != []


def test_core_rule_accepts_the_core_its_standard_library_and_pydantic() -> None:
    source = (
        "from __future__ import annotations\nimport math\nfrom datetime import datetime\n"
        "from pydantic import BaseModel\nfrom pumpctl.core.bag import BagLife\n"
        "from .state import InfusionState\nfrom .. import limits\n"
    )
    assert core_violations(imports_in(source, "pumpctl.core.machine.events")) == []


@pytest.mark.parametrize(
    "source",
    ["from pumpctl.clock import Clock", "import simulator", "from api.deps import Pumps"],
)
def test_driver_rule_detects_a_violation(source: str) -> None:
    assert driver_violations(imports_in(source, "drivers.serial.line")) != []


@pytest.mark.parametrize(
    "source", ["from pumpctl.controller import Controller", "import api", "from pumpctl import cli"]
)
def test_simulator_rule_detects_a_violation(source: str) -> None:
    assert simulator_violations(imports_in(source, "simulator.model")) != []


def test_simulator_rule_accepts_drivers_and_the_clock() -> None:
    source = "from drivers.serial.codec import Command\nfrom pumpctl.clock import Clock\n"
    assert simulator_violations(imports_in(source, "simulator.model")) == []


def test_web_side_rule_detects_the_kernels_stack() -> None:
    """Measured on the kernel's command (`pumpctl serve`), which loads all of it."""
    violations = kernel_stack_violations(loaded_by("import pumpctl.cli.serve"))
    for kernel in KERNEL_STACK:
        assert any(within(n, kernel) for n in violations), kernel


def test_web_side_rule_names_modules_not_prefixes() -> None:
    loaded = {"pumpctl.storefront", "driverslib", "pumpctl.cli.web", "sqlalchemy.orm"}
    assert kernel_stack_violations(loaded) == ["sqlalchemy.orm"]


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("pumpctl.cli.simulate", True),
        ("pumpctl.cli", True),
        ("api.sim", True),
        ("api.sim.routes", True),
        ("api.simulation", False),
        ("api.routes.sim", False),
        ("api.routes.pumps", False),
        ("api.app", False),
        ("api.deps", False),
        ("pumpctl.controller.supervisor", False),
        ("drivers.mqtt.pump", False),
    ],
)
def test_simulator_importer_rule_allows_only_the_cli_and_sim_routes(
    module: str, allowed: bool
) -> None:
    source = "from simulator.model import PumpModel"
    violations = simulator_importer_violations(module, imports_in(source, module))
    assert (violations == []) is allowed
