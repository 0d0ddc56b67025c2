"""The agserve command run as a user would: a subprocess of the installed console script."""
from __future__ import annotations

import subprocess

from tests.support.servers import BIN, ROOT, server_env


def agserve(*args: str, repository, auth_db) -> subprocess.CompletedProcess:
    env = server_env(AGSERVE_MODEL_REPOSITORY=str(repository), AGSERVE_AUTH_DB=str(auth_db))
    return subprocess.run([str(BIN / "agserve"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
