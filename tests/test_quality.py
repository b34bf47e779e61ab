"""The checks the project holds itself to, run with the suite so one command runs them all."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "daemonkit"


def test_ruff_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_package() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
    assert len(commands) >= 2, "README opens with the demo command and the test command"
    test_command = commands[1].strip()
    assert "pytest" in test_command
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci_script, "CI must run exactly the README's test command"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The daemonkit modules ``path`` imports, at module level or in a function; imports under
    ``if TYPE_CHECKING:`` are never executed and do not count."""
    tree = ast.parse(path.read_text())
    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from . import process` imports a module, not `.`
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {name for name in found if name in modules and name != own}


def test_the_package_imports_downward_only() -> None:
    """No import cycle inside daemonkit/: each module can be read knowing only what is below."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    graph = {_module_name(path): _imports(path, modules) for path in paths}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_daemon_keeps_only_its_documented_names() -> None:
    """Every name on Daemon is one a service may not pick for itself; README lists them."""
    from daemonkit import Daemon

    names = {name for name in vars(Daemon) if not name.startswith("__")}
    documented = {"name", "pidfile", "user", "group", "workdir", "umask", "start_timeout",
                  "stop_timeout", "log_file", "log_level", "listen", "add_arguments", "configure",
                  "setup_privileged", "setup", "run", "reload", "shutdown", "reopen_logs",
                  "status_info", "handle_control", "handle_command", "healthy", "critical",
                  "main"}
    assert names == documented
    instance = Daemon()
    assert set(vars(instance)) == {"options", "log", "stopping", "listeners"}
    readme = (ROOT / "README.md").read_text()
    reserved = readme.split("### Reserved names", 1)[1].split("\n#", 1)[0]
    missing = sorted(n for n in documented | set(vars(instance)) if f"`{n}`" not in reserved)
    assert not missing, f"README's reserved names lack {missing}"


def test_the_readme_tutorial_is_the_real_files() -> None:
    """What the tutorial shows is what runs: the whole example files, not an abridged copy."""
    readme = (ROOT / "README.md").read_text()
    for example in ("hello.py", "async_hello.py"):
        text = (ROOT / "examples" / example).read_text().rstrip("\n")
        assert f"```python\n{text}\n```" in readme, f"README's copy of examples/{example}"
