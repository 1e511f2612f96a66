"""`make bench-gpu`'s Markdown: the machine, the default model's table, the larger models'
table, the issue's targets met or not, and where RESULTS.md keeps it (between the markers)."""

from __future__ import annotations

from pathlib import Path

GPU_START, GPU_END = "<!-- bench-gpu:start -->", "<!-- bench-gpu:end -->"
MINILM = "all-MiniLM-L6-v2"


def to_markdown(report: dict) -> str:
    """The GPU section of RESULTS.md, from a report complete or cut short (steps not run are
    left out)."""
    m = report["machine"]
    smoke = " (smoke run: figures mean nothing)" if report["smoke"] else ""
    quick = " (quick run: once each)" if report.get("quick") else ""
    shards = report.get("shards", 1)
    cores = f", {report['host_cores']} cores" if "host_cores" in report else ""
    cuda = f", CUDA {report.get('cuda') or 'none'}" if "cuda" in report else ""
    lines = [
        f"**{report['device']}**, {report['date']}, {report['rows']:,} pydocs rows in {shards} "
        f"shard{'s' if shards > 1 else ''}, torch {m['torch']}{cuda}, host CPU {m['cpu']}"
        f"{cores}{smoke}{quick}. embed-etl: Parquet in to Parquet out, start-up included; "
        "sentence-transformers: `encode` alone, after a warm-up. GPU busy: the batches' "
        "compute time by CUDA events over the embedding's wall time.",
        "",
        "| run | dtype | rows/s | x sentence-transformers | min cosine to float32 | GPU busy |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in report.get("results", []):
        ratio = f"{r['x_st']:.2f}" if "x_st" in r else "1.00"
        rate, cos = f"{r['rows_per_s']:,.1f}", f"{r['cos_min']:.4f}"
        busy = share(r["gpu_busy"]) if "gpu_busy" in r else ""
        lines.append(f"| {r['what']} | {r['dtype']} | {rate} | {ratio} | {cos} | {busy} |")
    tok = report.get("tokenizer")
    if tok:
        lines += [
            "",
            f"The tokenizer alone, `encode_batch` on the same rows, truncating at 256, its rayon "
            f"threads on all {tok['cores']} cores: {tok['rows_per_s']:,.1f} rows/s (median of "
            f"{len(tok['seconds'])}).",
        ]
    models = report.get("models", [])
    if models:
        lines += [
            "",
            "Larger shapes with seeded random weights, the first rows of the same corpus: "
            "embed-etl's rates over its embedding window (its first shard's start to its last "
            "shard's record: model load and warm-up excluded, as from `encode`); tokens: the "
            "attention masks' ones after truncation at 512.",
            "",
            "| model | run | dtype | rows/s | tokens/s | x sentence-transformers "
            "| min cosine to float32 | GPU busy |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in models:
            ratio = f"{r['x_st']:.2f}" if "x_st" in r else "1.00"
            busy = share(r["gpu_busy"]) if "gpu_busy" in r else ""
            lines.append(
                f"| {r['model']}, {r['rows']:,} rows | {r['what']} | {r['dtype']} "
                f"| {r['rows_per_s']:,.1f} | {r['tokens_per_s']:,} | {ratio} "
                f"| {r['cos_min']:.4f} | {busy} |"
            )
    met = targets(report)
    if met:
        lines += ["", "| target | wanted | measured | met |", "|---|---|---:|---|"]
        lines += [f"| {what} | {wanted} | {got} | {ok} |" for what, wanted, got, ok in met]
    tail = []
    cold = report.get("cold_start")
    if cold:
        tail.append(
            f"Cold start, one row, medians of {cold['repeats']}: embed-etl {cold['job_s']} s, "
            f"the sentence-transformers script {cold['st_script_s']} s (ratio {cold['ratio']})."
        )
    tests = report.get("cuda_tests")
    if tests:
        tail.append(
            f"CUDA tests: {tests['passed']} passed, {tests['failed']} failed, "
            f"{tests['skipped']} skipped."
        )
    return "\n".join([*lines, "", " ".join(tail), ""]) if tail else "\n".join([*lines, ""])


def targets(report: dict) -> list[tuple[str, str, str, str]]:
    """(target, wanted, measured, met) for each of the issue's targets this report measured."""
    found = []
    jobs = [
        r for r in report.get("results", []) if r["dtype"] == "bfloat16" and "x_st" in r
    ]  # the default model's bfloat16 job runs
    best = max(jobs, key=lambda r: r.get("rows_per_s_window") or r["rows_per_s"], default=None)
    tok = report.get("tokenizer")
    if best and tok:
        rate = best.get("rows_per_s_window") or best["rows_per_s"]
        found.append(
            (
                f"{MINILM} bfloat16, fastest job run ({best['what'].removeprefix('embed-etl, ')}"
                "): rows/s in its embedding window over `encode_batch`'s",
                ">= 0.85",
                f"{rate / tok['rows_per_s']:.2f} ({rate:,.0f} of {tok['rows_per_s']:,.0f})",
                _met(rate / tok["rows_per_s"] >= 0.85),
            )
        )
    if best:
        found.append(_at_least(f"{MINILM} bfloat16, the same run: GPU busy", best["gpu_busy"], 0.9))
    for r in report.get("models", []):
        if not r["what"].startswith("embed-etl"):
            continue
        if r["model"].startswith("BERT"):
            h200 = "H200" in report["device"]
            found.append(
                (
                    "BERT-base-shaped bfloat16: tokens/s",
                    ">= 1,400,000 on an H200",
                    f"{r['tokens_per_s']:,}",
                    _met(r["tokens_per_s"] >= 1_400_000) if h200 else "(not an H200)",
                )
            )
        else:
            found.append(_at_least("decoder bfloat16: GPU busy", r["gpu_busy"], 0.95))
        name = r["model"].split(",")[0].split(" (")[0]
        cos = r["cos_min"]
        wanted, got = ">= 0.999", f"{cos:.4f}"
        found.append((f"{name} bfloat16: min cosine to float32", wanted, got, _met(cos >= 0.999)))
    return found


def _at_least(what: str, busy: float | None, wanted: float) -> tuple[str, str, str, str]:
    return (what, f">= {wanted:.0%}", share(busy), "n/a" if busy is None else _met(busy >= wanted))


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def share(busy: float | None) -> str:
    return "n/a" if busy is None else f"{busy:.0%}"


def write_results(path: Path, markdown: str) -> None:
    """Replace what lies between the GPU markers of a RESULTS.md with this run's table."""
    text = path.read_text()
    start, end = text.find(GPU_START), text.find(GPU_END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: no {GPU_START} ... {GPU_END} section to put the table in")
    path.write_text(text[: start + len(GPU_START)] + "\n" + markdown.strip() + "\n" + text[end:])
