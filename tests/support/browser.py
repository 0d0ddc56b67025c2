"""Headless Chromium (Debian's package), kept on loopback, and the folder its screenshots go to."""
from __future__ import annotations

import shutil
import subprocess

from tests.support.servers import ROOT

ARTIFACTS = ROOT / "test-artifacts"


def chromium(profile, *arguments) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs Debian's chromium package"
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={profile}", "--no-first-run", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--disable-extensions",
                           # Nothing but loopback resolves, so nothing could leave it even by mistake.
                           "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                           "--virtual-time-budget=15000", "--window-size=1280,2400", *arguments],
                          capture_output=True, text=True, timeout=180)
