"""Rules of the code base that review would otherwise have to remember.

- No function in `advkit/` longer than 60 lines (body, docstring excluded).
- `advkit/` imports no private name (`_x`) from `attacks` or `models`.
- `attacks` and `models` import only torch and the standard library (and never each other).
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if not body:
        return 0
    return (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def long_functions(package: str) -> list[str]:
    found = []
    for path in sources(package):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if body_lines(node) > MAX_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    return found


def test_no_function_in_advkit_is_longer_than_a_screen():
    assert long_functions("advkit") == []


def imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def test_advkit_imports_no_private_name_from_attacks_or_models():
    private = [
        f"{path.relative_to(ROOT)}: {module} {names}"
        for path in sources("advkit")
        for module, names in imports(path)
        if module.split(".")[0] in ("attacks", "models")
        and (
            any(part.startswith("_") for part in module.split("."))
            or any(n.startswith("_") for n in names)
        )
    ]
    assert private == []


@pytest.mark.parametrize("package, other", [("attacks", "models"), ("models", "attacks")])
def test_attacks_and_models_import_only_torch(package, other):
    allowed = {"torch", package, *sys.stdlib_module_names} - {other}
    outside = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sources(package)
        for module, _ in imports(path)
        if module.split(".")[0] not in allowed
    ]
    assert outside == []
