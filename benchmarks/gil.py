"""How many tokenizing cores one job process can keep busy: the time a row holds the GIL on the
host side, against the tokenizer's own time a row on one core.

The tokenizer runs in Rust with the GIL released, on as many cores as it is given; everything
else a row costs in the job process (taking ids out, batching, placing vectors, writing) holds
the GIL. One process therefore keeps at most

    cores = tokenizer seconds a row on one core / GIL seconds a row

tokenizing cores busy. The GIL time comes from `py-spy record --gil` (samples taken only while
a thread holds the GIL) of the host side with the stand-in model (benchmarks.feed), on a small
and a large run: start-up drops out of the difference, and stacks under an import are left out
of both (imports hold the GIL for a varying time). The tokenizer runs on one thread
(RAYON_NUM_THREADS=1) in both measurements, so that it does not take the GIL holder's core.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RATE = 500  # py-spy samples a second
IMPORTS = ("<module>", "_find_and_load", "_load_unlocked")


def measure(src: Path, small: int, large: int, repeats: int = 3) -> dict:
    """GIL us a row (median of ``repeats`` differences), the tokenizer's us a row on one core,
    and the cores one process keeps busy."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAYON_NUM_THREADS": "1"}
    per_row = []
    for _ in range(repeats):
        held = {n: _held(spy, src / f"in-{n}", env) for n in (small, large)}
        per_row.append((held[large] - held[small]) / (large - small))
    per_row.sort()
    gil_us = per_row[len(per_row) // 2] * 1e6
    tokenizer_us = _tokenizer_us(src / f"in-{large}", large, env)
    return {
        "gil_us_per_row": round(gil_us, 2),
        "gil_us_per_row_runs": [round(x * 1e6, 2) for x in per_row],
        "tokenizer_us_per_row_one_core": round(tokenizer_us, 1),
        "cores_one_process_keeps_busy": round(tokenizer_us / gil_us, 1) if gil_us > 0 else None,
    }


def _held(spy: str, src: Path, env: dict, tries: int = 3) -> float:
    """Seconds the stand-in job held the GIL outside imports (py-spy now and then hangs once
    its child has exited: such a try is given up after a while and made again)."""
    for attempt in range(tries):
        try:
            return _held_once(spy, src, env)
        except (subprocess.TimeoutExpired, RuntimeError):
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def _held_once(spy: str, src: Path, env: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "gil.txt"
        command = [spy, "record", "--gil", "-r", str(RATE), "--format", "raw", "-o", str(raw)]
        options = json.dumps({"batch_tokens": 32768})
        child = [sys.executable, "-m", "benchmarks.feed", "standin", str(src), options]
        done = subprocess.run(
            [*command, "--", *child], env=env, capture_output=True, text=True, timeout=300
        )
        if not raw.exists():  # py-spy's own exit status varies with how the child ended
            raise RuntimeError(f"py-spy wrote no samples:\n{done.stderr[-2000:]}")
        samples = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not any(name in stack for name in IMPORTS):
                samples += int(count)
    return samples / RATE


def _tokenizer_us(src: Path, rows: int, env: dict) -> float:
    """The tokenizer's encode_batch_fast a row, without truncation, on one thread."""
    child = [sys.executable, "-m", "benchmarks.feed", "ceiling", str(src)]
    options = json.dumps({"fast": True, "whole": True})
    done = subprocess.run([*child, options], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"] / rows * 1e6


def show(m: dict) -> None:
    if "skipped" in m:
        print(f"GIL capacity: skipped ({m['skipped']})")
        return
    print(
        f"GIL a row on the host side: {m['gil_us_per_row']} us (runs {m['gil_us_per_row_runs']}); "
        f"the tokenizer a row on one core: {m['tokenizer_us_per_row_one_core']} us; one job "
        f"process keeps {m['cores_one_process_keeps_busy']} tokenizing cores busy"
    )
