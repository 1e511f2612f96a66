"""embed-etl, except that the first run of part FLAKY_PART dies after its first shard.

What a worker lost mid-task looks like to Airflow: the task fails with its part half done,
and its retry must redo only the rest. A marker file makes the failure happen once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REAL = str(Path(sys.executable).parent / "embed-etl")


def main(args: list[str]) -> int:
    part = os.environ.get("FLAKY_PART", "1")
    marker = Path(os.environ["FLAKY_MARKER"])
    is_part = args[:1] == ["run"] and args[args.index("--shard-index") + 1] == part
    if not is_part or marker.exists():
        os.execv(REAL, [REAL, *args])
    marker.touch()
    done = Path(args[args.index("--output") + 1]) / "_embed_etl" / "done"
    before = len(list(done.glob("*"))) if done.is_dir() else 0
    job = subprocess.Popen([REAL, *args, "--batch-size", "2"], start_new_session=True)
    while job.poll() is None and (len(list(done.glob("*"))) if done.is_dir() else 0) <= before:
        time.sleep(0.005)
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)  # the worker is lost with the part half done
        job.wait()
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
