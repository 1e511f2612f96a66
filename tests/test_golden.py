"""The vectors of fixed texts, bit for bit: a change to any family's vectors must come with a
bump of etl.version.VECTOR_CODE_VERSION (which every fingerprint covers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.golden import GOLDEN, REPRODUCIBLE, problems, versions


@pytest.fixture(scope="module")
def computed():
    """This code's digests and, with every family's pooling one ulp off, the nudged ones: one
    process, with the numeric libraries held to the same code on every CPU."""
    env = {**os.environ, **REPRODUCIBLE, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.golden", "--nudge"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_the_golden_vectors_hold_at_head(computed):
    golden = json.loads(GOLDEN.read_text())
    if golden["versions"] != versions():
        pytest.skip(
            f"the golden digests were recorded with {golden['versions']}, this environment has "
            f"{versions()}: `make test` installs tests/constraints.txt"
        )
    assert problems(golden, computed) == []


def test_one_ulp_in_any_familys_pooling_fails_the_golden_test(computed):
    golden = {k: computed[k] for k in ("vector_code_version", "versions", "digests")}
    nudged = {**golden, "digests": computed["nudged"]}
    found = problems(golden, nudged)
    assert len(found) == len(golden["digests"]) == 15  # every family, the default model too
    assert all("did not: bump it" in line for line in found)
    bumped = {**nudged, "vector_code_version": golden["vector_code_version"] + 1}
    (stale,) = problems(golden, bumped)  # bumped, not recorded yet: record them
    assert "record them" in stale
