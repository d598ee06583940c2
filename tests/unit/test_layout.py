"""Rules of the layout that keep it true as the code grows (issue 15)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_addons_reach_the_gate_only_through_loaded():
    # One typed lookup (addons/loaded.py), not a name and getattr in each addon.
    lookups = [
        path.relative_to(REPO).as_posix()
        for folder in ("addons", "proxy", "directory")
        for path in (REPO / folder).rglob("*.py")
        if 'addons.get("citygate")' in path.read_text(encoding="utf-8")
    ]
    assert lookups == ["addons/loaded.py"]


def test_only_the_process_edge_of_proxy_imports_mitmproxy():
    importers = sorted(
        path.relative_to(REPO / "proxy").as_posix()
        for path in (REPO / "proxy").rglob("*.py")
        if any(
            line.strip().startswith(("import mitmproxy", "from mitmproxy"))
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    )
    assert importers, "proxy/cli and proxy/runtime start mitmproxy"
    assert all(name.startswith(("cli/", "runtime/")) for name in importers), importers


def test_the_top_of_proxy_holds_only_the_core():
    assert len(list((REPO / "proxy").glob("*.py"))) <= 15


# The layers, top to bottom: a module may import its own layer and the layers below it. The
# command line assembles the proxy from the addons; the addons adapt the core to mitmproxy and
# use the process edge (workers, health, the metrics listener); the core and its feature
# families decide; the directory supplies facts about people and knows nothing above it.
LAYERS = (
    "citygate.proxy.cli",
    "citygate.addons",
    "citygate.proxy.runtime",
    "citygate.proxy",
    "citygate.directory",
)


def _modules() -> dict[str, Path]:
    modules = {}
    for folder in ("proxy", "addons", "directory"):
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(("citygate", *parts))] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The citygate modules `path` imports, at the top or inside functions.

    Imports under `if TYPE_CHECKING:` are left out: they are never run, so they cannot form a
    cycle at run time, and type checkers resolve such cycles.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules}


def _layer(module: str) -> int:
    return next(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_imports_run_down_the_layers():
    upward = sorted(
        f"{module} imports {imported}"
        for module, imports in _import_graph().items()
        for imported in imports
        if _layer(imported) < _layer(module)
    )
    assert upward == [], "an import runs up the layers (see LAYERS):\n" + "\n".join(upward)


def test_no_module_imports_itself_through_others():
    graph = _import_graph()
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_the_layer_test_sees_an_upward_import(tmp_path):
    # The rule above is only as good as its import reader: a directory module that imports the
    # policy (inside a function, too) must be seen.
    source = "def settings():\n    from citygate.proxy.policy import load_policy\n    return load_policy\n"
    module = tmp_path / "probe.py"
    module.write_text(source, encoding="utf-8")
    modules = _modules()
    assert _imports(module, modules) == {"citygate.proxy.policy"}
    assert _layer("citygate.proxy.policy") < _layer("citygate.directory.probe")


def test_every_package_folder_is_listed_for_installation():
    # pyproject lists the packages by hand (the folders map onto citygate.*): one left out works
    # in the editable checkout and is missing from `pip install .` (the Dockerfile's install).
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        "citygate." + ".".join(init.parent.relative_to(REPO).parts)
        for top in ("proxy", "addons", "directory")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
