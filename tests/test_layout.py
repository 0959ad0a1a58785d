"""The package's layout: imports run one way, in the order the README's Layout section lists."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "nstyle"


def layout_order() -> list[str]:
    block = ROOT.joinpath("README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    return re.findall(r"^  (\w+)\.py", block, flags=re.M)


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import a, b
                found.update(alias.name for alias in node.names)
    return found - {"__version__"}  # the package's version string, set before its imports


def test_every_module_is_listed_once():
    listed = layout_order()
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_"))
    assert sorted(listed) == modules and len(set(listed)) == len(listed)


def test_imports_run_one_way():
    order = layout_order()
    for index, module in enumerate(order):
        later = imports_of(module) - set(order[:index])
        assert not later, f"{module} imports {sorted(later)}, listed after it"
