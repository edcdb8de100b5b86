"""Imports flow one way: every import in tunify/ (lazy ones inside functions included) goes to a
package of the same or a lower rank, no two modules or packages import each other in a circle,
and nothing reaches into another package's private names (``_name``)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tunify"

# The floors, lowest first (README "How it fits together" draws the same). Same-rank packages may
# import each other only where it makes no circle (objectives reads data; metrics reads objectives).
RANKS = {
    "_text": 0, "lam": 0, "files": 0, "console": 0, "version": 0, "shipped": 0,  # helpers everything may use
    "layers": 1,                                                    # tunable layers
    "surgery": 2,                                                   # tunify(), bake, TunableModel
    "data": 3, "objectives": 3, "metrics": 3, "archs": 3, "baselines": 3,  # what training is made of
    "evaluation": 4,                                                # the one λ sweep
    "training": 5,                                                  # recipes, fit, runs
    "publishing": 6,                                                # folders, zoo, hub, resolving names
    "export": 7, "demo": 7,                                         # what a published model is used for
    "cli": 8, "cli_errors": 8, "cli_convert": 8, "__init__": 8,     # the command line, the package root
}
# The root's own helper module: shared by design, private to tunify as a whole.
SHARED_PRIVATE_MODULES = {"_text"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _files():
    return sorted(ROOT.rglob("*.py"))


def _imports(path: Path):
    """(line, target module, imported names) for every tunify import in the file."""
    module = _module_name(path)
    package_of_file = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of_file.split(".")[: len(package_of_file.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            target, names = None, []
            for alias in node.names:
                if alias.name.split(".")[0] == "tunify":
                    yield node.lineno, alias.name, []
            continue
        else:
            continue
        if target.split(".")[0] == "tunify":
            yield node.lineno, target, names


def _resolve(target: str, names):
    """The modules an import reaches: ``from pkg import sub`` is the submodule when one exists."""
    out = []
    for name in names or [None]:
        sub = f"{target}.{name}" if name else None
        path = ROOT.parent / Path(*(sub or "").split("."))
        if sub and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
            out.append(sub)
        else:
            out.append(target)
    return set(out)


def _graph():
    edges = {}
    for path in _files():
        module = _module_name(path)
        for _, target, names in _imports(path):
            edges.setdefault(module, set()).update(_resolve(target, names) - {module})
    return edges


def _cycle(edges):
    """One circle in a directed graph, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if not state.get(nxt):
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if not state.get(node):
            found = visit(node)
            if found:
                return found
    return None


def test_every_package_has_a_rank():
    packages = {_package(_module_name(p)) for p in _files()}
    assert packages <= set(RANKS), f"give these a rank in RANKS and the README: {sorted(packages - set(RANKS))}"


def test_imports_only_go_down():
    wrong = []
    for path in _files():
        src = _package(_module_name(path))
        for line, target, _ in _imports(path):
            dst = _package(target)
            if dst != src and RANKS[dst] > RANKS[src]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: {src} (rank {RANKS[src]}) imports "
                             f"{target} (rank {RANKS[dst]})")
    assert not wrong, "imports up the floors:\n" + "\n".join(wrong)


def test_no_import_circles():
    modules = _graph()
    # A package's __init__ imports its submodules; that is the package, not a circle.
    circle = _cycle({m: {t for t in ts if not m.startswith(t + ".")} for m, ts in modules.items()})
    assert circle is None, f"modules import each other in a circle: {' -> '.join(circle)}"
    packages = {}
    for m, ts in modules.items():
        packages.setdefault(_package(m), set()).update(_package(t) for t in ts if _package(t) != _package(m))
    circle = _cycle(packages)
    assert circle is None, f"packages import each other in a circle: {' -> '.join(circle)}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_names_across_packages():
    wrong = []
    for path in _files():
        src = _package(_module_name(path))
        for line, target, names in _imports(path):
            if _package(target) == src:
                continue
            parts = [p for p in target.split(".")[1:] if p not in SHARED_PRIVATE_MODULES]
            bad = [p for p in parts if _private(p)] + [n for n in names if _private(n)]
            if bad:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: from {target} import {', '.join(names)}")
    assert not wrong, "private names of another package:\n" + "\n".join(wrong)


def _torch_privates():
    """Private names of torch's own modules and tensors (``_modules``, ``_parameters``...): tunify
    writes some of them, but they are torch's interface, not another tunify package's."""
    import torch

    return {n for obj in (torch.nn.Module(), torch.zeros(1)) for n in (*dir(obj), *vars(obj)) if _private(n)}


def _private_definitions():
    """package -> private names it defines (functions, methods, classes, attributes set on self)."""
    defined, torch_names = {}, _torch_privates()
    for path in _files():
        names = defined.setdefault(_package(_module_name(path)), set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
                names.add(node.id)
    return {package: names - torch_names for package, names in defined.items()}


def test_no_private_attributes_of_another_package():
    """``obj._name`` where only another package defines ``_name`` (torch's own privates, which no
    tunify package defines, are not this test's business)."""
    defined = _private_definitions()
    wrong = []
    for path in _files():
        src = _package(_module_name(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _private(node.attr)):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            owners = [p for p, names in defined.items() if node.attr in names]
            if owners and src not in owners:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: .{node.attr} (defined in {', '.join(owners)})")
    assert not wrong, "private attributes of another package:\n" + "\n".join(wrong)


def test_the_checks_catch_what_they_forbid(tmp_path):
    """The walker sees lazy imports inside functions and relative imports two levels up."""
    path = ROOT / "surgery" / "api.py"
    found = {target for _, target, _ in _imports(path)}
    assert "tunify.lam" in found and "tunify.surgery.graph" in found
    assert _cycle({"a": {"b"}, "b": {"a"}}) is not None and _cycle({"a": {"b"}, "b": set()}) is None
    lazy = [t for _, t, _ in _imports(ROOT / "cli.py") if t.startswith("tunify.training")]
    assert lazy, "cli's lazy imports of training must be seen"


@pytest.mark.parametrize("name", ["README.md"])
def test_readme_draws_the_same_floors(name):
    text = (ROOT.parent / name).read_text()
    assert "## How it fits together" in text
    section = text.split("## How it fits together", 1)[1].split("\n## ", 1)[0]
    for package in ("layers", "surgery", "evaluation", "training", "publishing", "cli"):
        assert package in section
