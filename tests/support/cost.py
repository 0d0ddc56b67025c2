"""What a request costs a worker process, read from /proc, and the default body limit such requests are sized to."""
from __future__ import annotations

from pathlib import Path

from app.config import SETTINGS

LIMIT = next(s.default for s in SETTINGS if s.name == "MAX_BODY_BYTES")  # 32 MiB, the default
TICKS = 100  # clock ticks per second in /proc/<pid>/stat (USER_HZ)


def worker_cpu_and_rss(pid: int) -> tuple[float, float]:
    """(user + system CPU seconds, resident MB) of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14 and 15 of stat
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return cpu, rss_kb / 1024
