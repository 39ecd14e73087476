"""The shape of the code (docs/ARCHITECTURE.md): short functions, no module import cycles.

The package layers themselves are checked by import-linter in CI (``lint-imports``).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "skinlesion"
MAX_FUNCTION_LINES = 80
"""A longer function needs a ``# long: <reason>`` comment in its first lines."""


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


def test_no_function_is_longer_than_80_lines_without_a_reason() -> None:
    long = []
    for name, tree in _modules().items():
        source = (SRC.parent / (name.replace(".", "/"))).with_suffix(".py")
        lines = (source if source.is_file() else source.with_suffix("") / "__init__.py"
                 ).read_text(encoding="utf-8").splitlines()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                head = "\n".join(lines[node.lineno - 1:node.lineno + 5])
                if length > MAX_FUNCTION_LINES and "# long:" not in head:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long, "split these (or say why in a '# long:' comment): " + "; ".join(long)


def _top_level_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """skinlesion modules imported when ``name`` loads (not inside functions or
    ``if TYPE_CHECKING``)."""
    found: set[str] = set()
    package = name if (SRC.parent / name.replace(".", "/") / "__init__.py").is_file() \
        else name.rsplit(".", 1)[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def test_modules_import_each_other_without_cycles() -> None:
    trees = _modules()
    known = set(trees)
    graph = {name: _top_level_imports(name, tree, known) for name, tree in trees.items()}
    # Importing a submodule imports its package's __init__ first: not a cycle to report.
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" → ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "module import cycles: " + "; ".join(cycles)
    # The checker sees real edges (a sanity check that it is not vacuous).
    assert "skinlesion.inference.predictor" in graph["skinlesion.workflows.scoring"]
