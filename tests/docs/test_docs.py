"""The documentation points at things that exist: the request path of docs/architecture.md names at most about eight
files, all real; every path and relative link the README and docs/ name is in the repository."""
from __future__ import annotations

import re

from tests.support.servers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"`((?:app|tests|deploy|config|bench)/[\w./-]*|[\w-]+\.py)`")
# The operator's certificate folder and Prometheus scrape key: named by the docs, never in the repository.
YOURS = {"deploy/tls/", "deploy/prometheus/metrics.key"}


def request_path() -> list[str]:
    """The files of the numbered list under "## The request path", in order."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("\n## The request path\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. `([^`]+)`", section, flags=re.MULTILINE)


def test_the_request_path_names_at_most_eight_files_that_exist():
    files = request_path()
    assert 5 <= len(files) <= 8, files
    assert files[0] == "app/api/hooks.py" and "app/inference/dataplane.py" in files
    assert [f for f in files if not (ROOT / f).is_file()] == []


def test_every_path_the_docs_name_exists():
    missing = {}
    for page in DOCS:
        for path in PATH.findall(page.read_text()):
            if path not in YOURS and not (ROOT / path).exists():
                missing.setdefault(page.name, []).append(path)
    assert missing == {}


def test_every_relative_link_resolves():
    broken = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert broken == []
