"""Stage deps cannot drift from the code: every project module a stage's command imports is a dep.

The imports are found statically: the command's function in ``cartoon/cli.py`` (and the cli
helpers it calls), then every ``cartoon`` import of each module reached, module-level or
inside functions (lazy imports run too). A package whose ``__init__`` loads its modules by
name (the method registry) brings all of them. Editing any of these files must make
``dvc status`` report the stage, which the second test checks with DVC itself.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cartoon"
CLI = PACKAGE / "cli.py"


def _module_file(name: str) -> Path | None:
    """The file of project module ``name`` (``cartoon.data.store``), or None for other packages."""
    if name != "cartoon" and not name.startswith("cartoon."):
        return None
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imported_modules(tree: ast.AST, module: str) -> set[str]:
    """Names of the modules an AST imports (``from x import y`` counts x, and x.y if y is a module)."""
    names: set[str] = set()
    package = module if module.endswith("__init__") else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.removesuffix(".__init__").split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if _module_file(name) is not None}


def _expand(modules: set[str]) -> set[Path]:
    """Every file reached from ``modules``: their imports, transitively, plus parent packages."""
    files: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None or path in files:
            continue
        files.add(path)
        source = path.read_text()
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imported_modules(ast.parse(source), name + (".__init__" if path.name == "__init__.py" else "")))
        if path.name == "__init__.py" and "pkgutil.iter_modules" in source:  # a registry loads all its modules
            todo.extend(f"{name}.{child.stem}" for child in path.parent.glob("*.py") if child.name != "__init__.py")
    return files


def _command_modules(command: str) -> set[str]:
    """Modules the CLI imports to run ``cartoon <command>``: cli's own imports at module level, and
    those inside the command's function and the cli helpers it calls."""
    tree = ast.parse(CLI.read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    commands = {}
    for node in functions.values():
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "command":
                commands[decorator.args[0].value if decorator.args else node.name.replace("_", "-")] = node
            elif getattr(decorator, "attr", "") == "command":
                commands[node.name.replace("_", "-")] = node
    module_level = ast.Module(body=[node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))], type_ignores=[])
    modules = _imported_modules(module_level, "cartoon.cli")
    seen: set[str] = set()
    todo = [commands[command].name]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        modules |= _imported_modules(functions[name], "cartoon.cli")
        todo.extend(node.func.id for node in ast.walk(functions[name])
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions)
    return modules


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_code_files(stage: dict) -> set[Path]:
    command = stage["cmd"].split()[1]
    return {CLI} | _expand(_command_modules(command))


def _covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


@pytest.mark.parametrize("name", sorted(_stages()))
def test_every_module_a_stage_imports_is_a_dep(name: str) -> None:
    stage = _stages()[name]
    missing = sorted(str(path.relative_to(ROOT)) for path in stage_code_files(stage) if not _covered(path, stage["deps"]))
    assert not missing, f"dvc.yaml stage {name} runs code it does not list as deps: {missing}"


def test_import_scan_follows_lazy_and_registry_imports() -> None:
    """The scan itself: the train command reaches the superpixel code only through a lazy import in
    a method module that the registry loads by name."""
    files = {str(path.relative_to(ROOT)) for path in stage_code_files(_stages()["train"])}
    assert {"cartoon/cli.py", "cartoon/training.py", "cartoon/methods/whitebox.py", "cartoon/superpixel.py"} <= files
    assert "cartoon/data/crawl.py" not in files
    assert "cartoon/data/crawl.py" in {str(path.relative_to(ROOT)) for path in stage_code_files(_stages()["crawl"])}


def _dvc(repo: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def _project_with_placeholder_data(repo: Path) -> None:
    """A copy of the project whose data, models and reports are placeholders, committed to a
    fresh dvc.lock: every stage is up to date until a file changes."""
    top_level_outputs = {"data", "models", "reports", "mlruns", "checkpoints"}
    shutil.copytree(ROOT, repo, ignore=lambda folder, names: [
        name for name in names
        if name in {".git", ".venv", "__pycache__", ".pytest_cache"} or name.endswith(".db")
        or (Path(folder) == ROOT and name in top_level_outputs)
    ])  # fmt: skip
    for stage in _stages().values():
        for entry in stage.get("deps", []) + stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path = repo / (entry if isinstance(entry, str) else next(iter(entry)))
            if path.exists():
                continue
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("placeholder\n")
            else:
                path.mkdir(parents=True)
                (path / "placeholder").write_text("placeholder\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "commit", "--force", "--quiet")


@pytest.mark.parametrize(("module", "stages"), [
    ("cartoon/superpixel.py", {"pretrain", "train", "evaluate"}),
    ("cartoon/cli.py", {"crawl", "resize", "smooth", "gray", "pretrain", "train", "evaluate"}),
    ("cartoon/data/celshade.py", {"crawl"}),
])  # fmt: skip
def test_editing_a_stage_module_makes_dvc_status_report_the_stage(tmp_path: Path, module: str, stages: set[str]) -> None:
    """DVC itself on a copy of the project: after editing one module, exactly the stages that
    import it report it as a changed dep."""
    repo = tmp_path / "repo"
    _project_with_placeholder_data(repo)
    assert json.loads(_dvc(repo, "status", "--json") or "{}") == {}
    with (repo / module).open("a") as handle:
        handle.write("\n# edited by the test\n")
    status = json.loads(_dvc(repo, "status", "--json"))
    changed = {name for name, changes in status.items() for change in changes
               if isinstance(change, dict) and any(_touches(dep, module) for dep in change.get("changed deps", {}))}
    assert changed == stages


def _touches(dep: str, module: str) -> bool:
    return module == dep or Path(dep) in Path(module).parents
