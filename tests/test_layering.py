"""The house's import rules, checked on the source (an AST walk, no imports executed).

- ``data`` and ``models`` import neither each other nor Prefect, nor ``tasks`` or ``flows``;
- ``tasks`` never imports ``flows``; its application code (``tasks/core``, ``tasks/kinds``)
  never imports Prefect: the Prefect tasks around it stay thin;
- generic code (everything outside ``tasks/kinds/<kind>``) reaches a problem kind only through
  the registry (``inversa.tasks.kinds``), never by importing a kind's package;
- every import of the project is namespaced (``inversa.data``, never ``data``);
- no import cycles among inversa's modules, counting imports inside functions too, so a cycle
  cannot be hidden by moving an import into a function.

``test_a_planted_violation_of_each_rule_is_caught`` plants one breach of each rule in a copy of
the tree and checks that the walk reports it.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"data": "inversa.data", "models": "inversa.models", "tasks": "inversa.tasks", "flows": "inversa.flows",
            "inversa": "inversa", "recipes": "inversa.recipes", "priors": "inversa.priors", "deploy": "inversa.deploy"}
SOURCE_ROOTS = ("data", "models", "tasks", "flows", "inversa", "deploy")
OTHER_PY = ("tests", "benchmarks")
PROJECT = ("data", "models", "tasks", "flows")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted and absolute
    path: Path
    line: int


def module_name(root: Path, path: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    top = PACKAGES.get(parts[0], parts[0])
    return ".".join([top, *parts[1:]])


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(root: Path, path: Path) -> list[Import]:
    """Every import statement in the file (inside functions too, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(Import(name, target, path, node.lineno))
            # `from package import module` imports the module
            found += [Import(name, f"{target}.{alias.name}", path, node.lineno) for alias in node.names]
    return found


def python_files(root: Path, folders) -> list[Path]:
    return sorted(p for folder in folders if (root / folder).is_dir() for p in (root / folder).rglob("*.py")
                  if "__pycache__" not in p.parts)


def _under(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every breach of the rules in the module docstring, one line each."""
    problems = []
    source = [imp for path in python_files(root, SOURCE_ROOTS) for imp in imports_of(root, path)]
    for imp in source:
        where = f"{imp.path.relative_to(root)}:{imp.line}: {imp.module} imports {imp.target}"
        for layer, banned in (("inversa.data", ("prefect", "inversa.models", "inversa.tasks", "inversa.flows")),
                              ("inversa.models", ("prefect", "inversa.data", "inversa.tasks", "inversa.flows")),
                              ("inversa.tasks", ("inversa.flows",)),
                              ("inversa.tasks.core", ("prefect",)),
                              ("inversa.tasks.kinds", ("prefect",))):
            if _under(imp.module, layer) and any(_under(imp.target, b) for b in banned):
                problems.append(f"{where} (layering: {layer} must not import it)")
        kind_package = imp.target.split(".")[:4]
        if (len(kind_package) == 4 and kind_package[:3] == ["inversa", "tasks", "kinds"]
                and (root / "tasks" / "kinds" / kind_package[3]).is_dir()):
            if imp.module.split(".")[:4] != kind_package:
                problems.append(f"{where} (generic code reaches a kind only through the registry)")
    for imp in source + [imp for path in python_files(root, OTHER_PY) for imp in imports_of(root, path)]:
        if imp.target.split(".")[0] in PROJECT:
            problems.append(f"{imp.path.relative_to(root)}:{imp.line}: imports {imp.target} "
                            f"(use the namespaced inversa.{imp.target})")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in import_cycles(source)]
    return problems


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module in the import graph (Tarjan)."""
    modules = {imp.module for imp in imports}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        target = imp.target
        while target and target not in modules:  # `from pkg.mod import name`: the module, not the name
            target = target.rpartition(".")[0]
        if target and target != imp.module:
            graph[imp.module].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_source_tree_keeps_the_rules():
    assert violations(REPO) == []


@pytest.fixture
def tree_copy(tmp_path):
    for folder in (*SOURCE_ROOTS, "tests"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize("file, line, rule", [
    ("models/uq.py", "from inversa.data.store import ResultStore", "layering: inversa.models"),
    ("data/figures.py", "import prefect", "layering: inversa.data"),
    ("tasks/core/kind.py", "from prefect import task", "layering: inversa.tasks.core"),
    ("tasks/kinds/ct/region.py", "from inversa.flows.cli import main", "layering: inversa.tasks"),
    ("flows/batch.py", "from inversa.tasks.kinds.ct.methods import build_sampler", "only through the registry"),
    ("tasks/pipeline.py", "import inversa.tasks.kinds.field.fit", "only through the registry"),
    ("tests/flows/helpers.py", "from data.synthetic import write_study", "use the namespaced"),
])
def test_a_planted_violation_of_each_rule_is_caught(tree_copy, file, line, rule):
    target = tree_copy / file
    target.write_text(target.read_text() + f"\n{line}\n")
    found = violations(tree_copy)
    assert any(rule in problem and file in problem for problem in found), found


def test_a_cycle_hidden_in_a_function_is_caught(tree_copy):
    # data.store_lock imports data.store; make data.store import data.store_lock back, inside a function.
    (tree_copy / "data" / "store.py").write_text(
        (tree_copy / "data" / "store.py").read_text()
        + "\n\ndef _late():\n    from inversa.data.store_lock import StoreLock\n    return StoreLock\n")
    found = violations(tree_copy)
    assert found == ["import cycle: inversa.data.store -> inversa.data.store_lock"], found
