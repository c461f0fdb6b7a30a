"""The layout the README describes, checked from the code's own imports (read, never run).

Rooms and floors: the hub at the bottom, the device library on it, the swarm on that, the product on top,
and the benchmarks and tests above everything; arrows only downward. Across packages only public names
are used: nothing whose module path or name starts with ``_``, and from a module that lists ``__all__``
only what it lists. No module imports itself back through a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("hubsim", "devicekit", "loadgen", "certstorm")
# each package and the packages it may import
MAY_IMPORT = {
    "hubsim": set(),
    "devicekit": {"hubsim"},
    "loadgen": {"hubsim", "devicekit"},
    "certstorm": {"hubsim", "devicekit", "loadgen"},
    "bench": {"hubsim", "devicekit", "loadgen", "certstorm"},
    "tests": {"hubsim", "devicekit", "loadgen", "certstorm", "bench"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def sources() -> list[Path]:
    return sorted(p for top in MAY_IMPORT for p in (ROOT / top).rglob("*.py"))


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def exported(module: str) -> set[str] | None:
    """The names a module lists in ``__all__``, read from its source; None if it lists none."""
    path = module_file(module)
    if path is None:
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return {ast.literal_eval(e) for e in node.value.elts}
    return None


def imports(path: Path):
    """(imported module, names taken from it or None, line) for every import in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names], node.lineno


def test_the_walk_finds_every_package():
    found = {package_of(p) for p in sources()}
    assert found == set(MAY_IMPORT)
    assert len(sources()) > 100


def test_arrows_run_only_downward():
    wrong = []
    for path in sources():
        home = package_of(path)
        for module, _, line in imports(path):
            top = module.split(".")[0]
            if top in MAY_IMPORT and top != home and top not in MAY_IMPORT[home]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def cross_package_violations(path: Path, home: str | None = None) -> list[str]:
    home = home or package_of(path)
    wrong = []
    for module, names, line in imports(path):
        top = module.split(".")[0]
        if top not in MAY_IMPORT or top == home:
            continue
        where = f"{path.name}:{line}"
        if any(part.startswith("_") for part in module.split(".")):
            wrong.append(f"{where} imports the private module {module}")
            continue
        listed = exported(module)
        for name in names or ():
            if name.startswith("_"):
                wrong.append(f"{where} imports the private name {name} from {module}")
            elif listed is not None and name not in listed and module_file(f"{module}.{name}") is None:
                wrong.append(f"{where} imports {name}, which {module} does not list in __all__")
    return wrong


def test_no_package_imports_a_private_or_unlisted_name_of_another():
    wrong = [w for path in sources() for w in cross_package_violations(path)]
    assert not wrong, "\n".join(wrong)


def test_the_check_refuses_what_it_should(tmp_path):
    """The rules above find a private name, a private module and an unlisted name."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from loadgen._http import Authenticator\nfrom hubsim.algorithms import _EC_HASHES\n"
        "from hubsim.engine import dataclass\nfrom hubsim import AuthEngine\n"
    )
    found = cross_package_violations(probe, home="bench")
    assert len(found) == 3, found
    assert any("private module loadgen._http" in w for w in found)
    assert any("private name _EC_HASHES" in w for w in found)
    assert any("imports dataclass, which hubsim.engine does not list" in w for w in found)


@pytest.mark.parametrize("package", SHIPPED)
def test_every_public_module_of_a_shipped_package_lists_its_names(package):
    missing = [
        str(p.relative_to(ROOT))
        for p in (ROOT / package).rglob("*.py")
        if not p.name.startswith("_") and module_name(p) != "loadgen.swarm" and exported(module_name(p)) is None
    ]
    # the locustfile is loaded by Locust, never imported
    assert not missing, missing


def test_no_import_loops_among_the_shipped_modules():
    graph: dict[str, set[str]] = {}
    for path in sources():
        if package_of(path) not in SHIPPED:
            continue
        name = module_name(path)
        edges = graph.setdefault(name, set())
        for module, names, _ in imports(path):
            if module.split(".")[0] not in SHIPPED:
                continue
            targets = [f"{module}.{n}" for n in names or () if module_file(f"{module}.{n}")] or [module]
            edges.update(t for t in targets if module_file(t) and t != name)
    loops = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                loops.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not loops, "\n".join(loops)
