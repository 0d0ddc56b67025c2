"""The tests themselves: they mirror the code, shared helpers live in tests/support/ (never in a conftest.py or a test
module), and a server a test starts leaves nothing behind."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.support.servers import ROOT, gunicorn

TESTS = ROOT / "tests"
# Folders that test something other than one app/ package, each named after what it tests.
BEYOND_APP = {
    "support": "helpers and servers the tests share",
    "server": "gunicorn.conf.py and wsgi.py: the served process as a whole",
    "deploy": "deploy/, the Makefile's deploy and run targets, the Dockerfile and compose",
    "client": "agserve/client.py",
    "fleet": "several replicas on one database and one Redis",
    "reliability": "faults under load: killed workers, full disks, soaks",
    "docs": "docs/ and the README",
}


def imported_modules(path: Path) -> list[str]:
    """Every module path imports, at any depth (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from tests.api import test_v2` imports a test module too
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def forbidden(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "tests" and any(part == "conftest" or part.startswith("test_") for part in parts[1:])


def test_no_module_imports_a_conftest_or_a_test_module():
    offenders = {str(path.relative_to(ROOT)): sorted({m for m in imported_modules(path) if forbidden(m)})
                 for path in sorted(TESTS.rglob("*.py"))}
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_every_app_package_has_a_test_folder_and_every_folder_mirrors_something():
    packages = {path.parent.name for path in (ROOT / "app").glob("*/__init__.py")}
    folders = {path.parent.name for path in TESTS.glob("*/__init__.py")}
    missing = {name for name in packages if not any((TESTS / name).glob("test_*.py"))}
    assert missing == set(), f"app/ packages without tests/<package>/test_*.py: {sorted(missing)}"
    assert folders - packages - set(BEYOND_APP) == set(), "a tests/ folder that mirrors no app/ package"


def test_every_top_level_test_module_mirrors_an_app_module():
    modules = {path.stem for path in (ROOT / "app").glob("*.py")}
    strays = {path.name for path in TESTS.glob("test_*.py")
              if path.name != "test_layout.py" and path.stem.removeprefix("test_") not in modules}
    assert strays == set(), "tests/test_<module>.py must name an app/<module>.py; put other tests in a folder"


def test_a_server_removes_the_folder_it_made_for_its_key_database(repository_path):
    with gunicorn(repository_path, workers=1, wait_ready=False) as server:
        folder = server.auth_db.parent
        assert folder.is_dir()
    assert not folder.exists()
