"""Golden vectors: fixed texts through the default model and every tiny family, one digest per
output column, compared bit for bit with tests/golden_vectors.json (tests/test_golden.py).

    python -m tests.golden            print this machine's digests
    python -m tests.golden --record   write them to tests/golden_vectors.json (after bumping
                                      etl.version.VECTOR_CODE_VERSION where vectors changed)

Bit-for-bit across machines: the digests are computed in a process whose numeric libraries run
the same code on every x86-64 CPU (torch's scalar kernels, MKL's conditional numerical
reproducibility, oneDNN and numpy held to the baseline instruction set, one thread), so that a
change of one unit in the last place of any vector shows, and the CPU does not. ``--nudge``
also runs every family with its pooling moved by one unit in the last place, to show that the
digests see it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden_vectors.json")
# The numeric libraries' CPU dispatch, held to code every x86-64 CPU runs the same way.
REPRODUCIBLE = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "DNNL_MAX_CPU_ISA": "SSE41",
    # numpy 2.x's dispatched groups above its x86-64-v2 baseline (numpy is pinned in
    # tests/constraints.txt: its group names change between releases)
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
LIBRARIES = ("torch", "transformers", "tokenizers", "sentence-transformers", "numpy")


def versions() -> dict[str, str]:
    """The libraries whose code shapes the vectors, as installed."""
    return {name: importlib.metadata.version(name) for name in LIBRARIES}


def families(root: Path) -> dict[str, tuple[Path | None, dict, list[str]]]:
    """name -> (model directory or None for the default model, job options, texts)."""
    from tests.conftest import build_tiny_model
    from tests.models import CASES, save_sentence_transformer, texts
    from tests.sparse_models import build_inference_free, build_multi_vector, build_splade_max
    from tests.sparse_models import texts as sparse_texts

    words, sparse = texts(8, seed=21), sparse_texts(8, seed=21)
    prompted = {"bert", "modernbert", "qwen3"}
    found: dict[str, tuple[Path | None, dict, list[str]]] = {
        "default": (None, {}, words),
        "plain-bert": (build_tiny_model(root / "plain-bert"), {}, words),
    }
    for case in CASES:
        model = save_sentence_transformer(case, root / case.arch)
        options = {"prompt_name": "query"} if case.arch in prompted else {}
        found[case.arch] = (model, options, words)
    found["splade"] = (build_splade_max(root / "splade"), {}, sparse)
    free = build_inference_free(root / "inference-free")
    found["inference-free-query"] = (free, {"task": "query"}, sparse)
    found["inference-free-document"] = (free, {"task": "document"}, sparse)
    found["multi-vector"] = (build_multi_vector(root / "multi-vector"), {}, sparse)
    return found


def digests(models: dict, root: Path) -> dict[str, dict[str, str]]:
    """family -> output column -> sha256 of its values, every nested list flattened."""
    import pyarrow.parquet as pq

    from etl import run_job
    from tests.conftest import job_config, write_shard

    found = {}
    for name, (model, options, texts) in models.items():
        shard = write_shard(root / name / "in" / "s.parquet", texts)
        out = root / name / "out"
        cfg = job_config(shard, out, model, threads=1, no_reuse=True, device="cpu", **options)
        summary = run_job(cfg)
        if not summary.ok:
            raise RuntimeError(f"{name}: {summary.to_dict()}")
        table = pq.read_table(out / "s.parquet")
        found[name] = {
            column: _digest(table.column(column).combine_chunks())
            for column in table.column_names
            if column != "id"
        }
    return found


def _digest(array) -> str:
    import pyarrow as pa

    h = hashlib.sha256()
    pending = [array]
    while pending:
        part = pending.pop(0)
        if pa.types.is_struct(part.type):
            pending += [part.field(i) for i in range(part.type.num_fields)]
        elif pa.types.is_list(part.type) or pa.types.is_fixed_size_list(part.type):
            if not pa.types.is_fixed_size_list(part.type):
                h.update(part.offsets.to_numpy().tobytes())
            pending.append(part.flatten())
        else:
            h.update(str(part.type).encode())
            h.update(part.to_numpy(zero_copy_only=False).tobytes())
    return h.hexdigest()


def nudge() -> None:
    """Every family's pooling, moved by one unit in the last place (nonzero values)."""
    import torch

    from etl.stages.compute import encoder, sparse_model
    from etl.stages.write import window

    def up(tensor):
        return torch.where(tensor != 0, torch.nextafter(tensor, torch.tensor(float("inf"))), tensor)

    def ulp(function, numpy: bool = False):
        def nudged(*args, **kwargs):
            result = function(*args, **kwargs)
            if numpy:
                return up(torch.from_numpy(result)).numpy()
            return up(result)

        return nudged

    encoder.pool = ulp(encoder.pool)  # dense families
    sparse_model.splade_pool = ulp(sparse_model.splade_pool)  # SPLADE
    sparse_model.static_weights = ulp(sparse_model.static_weights)  # inference-free queries
    window.l2_normalize = ulp(window.l2_normalize, numpy=True)  # multi-vector token vectors


def main(argv: list[str]) -> int:
    if any(os.environ.get(k) != v for k, v in REPRODUCIBLE.items()):
        os.execve(sys.executable, [sys.executable, "-m", "tests.golden", *argv], _environment())
    import torch

    from etl.version import VECTOR_CODE_VERSION

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = families(root / "models")
        result = {
            "vector_code_version": VECTOR_CODE_VERSION,
            "versions": versions(),
            "digests": digests(models, root / "plain"),
        }
        if "--nudge" in argv:
            nudge()
            result["nudged"] = digests(models, root / "nudged")
    if "--record" in argv:
        return _record(result)
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


def _environment() -> dict[str, str]:
    env = {**os.environ, **REPRODUCIBLE}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(GOLDEN.parent.parent), env.get("PYTHONPATH")])
    )
    return env


def problems(golden: dict, result: dict) -> list[str]:
    """Why ``result`` (this code's digests) does not pass against ``golden`` (the recorded ones),
    one line each; none where it passes."""
    if golden["vector_code_version"] != result["vector_code_version"]:
        return [
            f"VECTOR_CODE_VERSION is {result['vector_code_version']}, the golden digests are of "
            f"version {golden['vector_code_version']}: record them "
            "(python -m tests.golden --record)"
        ]
    found = []
    for family in sorted(set(golden["digests"]) | set(result["digests"])):
        old, new = golden["digests"].get(family), result["digests"].get(family)
        if old != new:
            columns = sorted(
                c
                for c in set(old or {}) | set(new or {})
                if (old or {}).get(c) != (new or {}).get(c)
            )
            found.append(
                f"{family}: {', '.join(columns)} changed and VECTOR_CODE_VERSION "
                f"({result['vector_code_version']}) did not: bump it in etl/version.py, then "
                "python -m tests.golden --record"
            )
    return found


def _record(result: dict) -> int:
    """Write the digests, unless vectors changed under the same vector-code version."""
    if GOLDEN.exists():
        old = json.loads(GOLDEN.read_text())
        same_code = old["vector_code_version"] == result["vector_code_version"]
        if (
            same_code
            and old["versions"] == result["versions"]
            and old["digests"] != result["digests"]
        ):
            print(
                "vectors changed and etl.version.VECTOR_CODE_VERSION did not: bump it first",
                file=sys.stderr,
            )
            return 1
    result.pop("nudged", None)
    GOLDEN.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"recorded {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
