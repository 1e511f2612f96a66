"""The `embed-etl` command line: options parsed into one JobConfig and handed to the library.

Here: the commands that run, watch and check a job (run, status, verify, plan) and their
options. The store commands are in jobs/cli_store.py; how every command prints, logs and turns
the library's errors into one line and an exit code, in jobs/cli_guard.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from typing import Any

import click

from etl import ConfigError, JobConfig, __version__
from etl.config import (
    CHUNK_BOUNDARIES,
    CHUNK_LAYOUTS,
    CHUNKING,
    DEVICES_HELP,
    DTYPES,
    ENGINES,
    ESTIMATE_ROWS,
    LONG_TEXT,
    OUTPUT_DTYPES,
    POOLINGS,
    TASKS,
)
from etl.errors import ExitCode, exit_codes_help
from etl.model.backend import BACKEND_CHOICES
from etl.options import config_from_options
from jobs.cli_guard import echo, guarded, setup_logging
from jobs.cli_store import store

OK, FAILED, INCOMPLETE = ExitCode.OK, ExitCode.SHARDS_FAILED, ExitCode.INCOMPLETE
RUN_EXITS = (OK, ExitCode.ERROR, ExitCode.USAGE, FAILED, ExitCode.INTERRUPTED)


def _env(name: str) -> dict[str, Any]:
    return {"envvar": f"EMBED_ETL_{name}", "show_envvar": True}


def _default(field: str) -> Any:
    """The JobConfig default of an option, shown in --help: one source for both."""
    return {"default": JobConfig.__dataclass_fields__[field].default, "show_default": True}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="embed-etl")
def cli() -> None:
    """Embed a text column of Parquet shards with a BERT-family encoder; write vectors as Parquet.

    One output file per input shard, same relative name, under --output.
    """


@cli.command(epilog=exit_codes_help(RUN_EXITS))
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", envvar="EMBED_ETL_INPUT")
@click.option(
    "-o",
    "--output",
    required=True,
    help="Directory or URI (s3://bucket/prefix/, gs://...) for the output shards.",
    **_env("OUTPUT"),
)
@click.option(
    "--model",
    default=None,
    help="Hugging Face hub id (cached or reachable) or local model directory. "
    "[default: sentence-transformers/all-MiniLM-L6-v2, packaged, offline]",
    **_env("MODEL"),
)
@click.option(
    "--text-column",
    **_default("text_column"),
    help="Column to embed.",
    **_env("TEXT_COLUMN"),
)
@click.option(
    "--id-column",
    **_default("id_column"),
    help="Row key, copied to the output.",
    **_env("ID_COLUMN"),
)
@click.option(
    "--keep-column",
    "keep_columns",
    multiple=True,
    help="Copy this input column to the output unchanged (repeatable).",
    **_env("KEEP_COLUMN"),
)
@click.option(
    "--pooling",
    "poolings",
    multiple=True,
    type=click.Choice(POOLINGS),
    help="Your own pooling instead of the model's recipe (repeatable; the model's Dense layers "
    "are then not applied): mean = masked mean, cls = first token, max = masked max, "
    "mean_sqrt_len_tokens, weightedmean (by position), lasttoken (last real token), pooler = "
    "the model's dense+tanh over [CLS] (last layer only), tokens = every token's vector, with "
    "a token_ids column. [default: the model's own sentence-transformers recipe (pooling, "
    "Dense, Normalize); masked mean for a model without one]",
    **_env("POOLING"),
)
@click.option(
    "--layer",
    "layers",
    multiple=True,
    type=int,
    help="Hidden-states index to pool (repeatable): 0 = embedding layer, 1..L = encoder "
    "layers, negative counts from the top (-1 = last). Only layers up to the deepest one "
    "asked for are run. [default: -1]",
    **_env("LAYER"),
)
@click.option(
    "--normalize/--no-normalize",
    default=None,
    help="L2-normalize every vector (what cosine-similarity indexes want). [default: as the "
    "model's recipe says (its Normalize module); off for a model without one]",
    **_env("NORMALIZE"),
)
@click.option(
    "--prompt",
    default=None,
    help="Text put before every text, as the model expects (e5: 'passage: '). Part of the "
    "fingerprint; n_tokens counts it.",
    **_env("PROMPT"),
)
@click.option(
    "--prompt-name",
    default=None,
    help="One of the model's configured prompts, by name (query, passage, ...). [default: the "
    "model's default prompt, if it has one]",
    **_env("PROMPT_NAME"),
)
@click.option(
    "--task",
    type=click.Choice(TASKS),
    default=None,
    help="Embed as sentence-transformers' encode_query or encode_document would: the route of "
    "an asymmetric sparse model (its Router), a multi-vector model's marker, length and "
    "skiplist, and the task's prompt. --prompt-name query implies --task query for those "
    "models. [default: what the model's encode gives, its default route]",
    **_env("TASK"),
)
@click.option(
    "--sparse-top-k",
    type=int,
    default=None,
    help="Sparse models: keep the K largest weights of each row (sentence-transformers' "
    "max_active_dims). [default: the model's max_active_dims, or every nonzero weight]",
    **_env("SPARSE_TOP_K"),
)
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Allow a model that ships its own Python code to run it. Only for models you trust.",
    **_env("TRUST_REMOTE_CODE"),
)
@click.option(
    "--backend",
    type=click.Choice(BACKEND_CHOICES),
    default="auto",
    show_default=True,
    help="The code that computes the vectors: auto picks the plain BERT (no transformers "
    "import, faster start) wherever it gives what transformers gives, transformers otherwise. "
    "Naming one that cannot run the model is an error, not a fallback.",
    **_env("BACKEND"),
)
@click.option(
    "--max-length",
    type=int,
    default=None,
    help="Truncate texts to this many tokens, [CLS] and [SEP] included. "
    "[default: the model's configured length; 256 for the default model]",
    **_env("MAX_LENGTH"),
)
@click.option(
    "--long-text",
    type=click.Choice(LONG_TEXT),
    **_default("long_text"),
    help="Texts longer than --max-length: truncate (keep the first tokens; the row's "
    "`truncated` column says so), chunk (embed windows over the whole text and join them: "
    "token-weighted mean, max for max pooling) or error (fail the shard, naming the row).",
    **_env("LONG_TEXT"),
)
@click.option(
    "--chunk-tokens",
    type=int,
    default=None,
    metavar="N",
    help="Passages as output: each text cut into passages of at most N tokens (at word "
    "starts), each written as a row of its own with the input row's id, its number (chunk) "
    "and its span (chunk_start, chunk_end: text[chunk_start:chunk_end] is the passage, in "
    "characters); --chunking says how each is embedded. [default: one vector a row]",
    **_env("CHUNK_TOKENS"),
)
@click.option(
    "--chunk-boundary",
    type=click.Choice(CHUNK_BOUNDARIES),
    **_default("chunk_boundary"),
    help="With --chunk-tokens, where passages end: tokens (as many whole words as fit) or "
    "sentence (whole sentences as fit; a longer sentence is cut by tokens).",
    **_env("CHUNK_BOUNDARY"),
)
@click.option(
    "--chunking",
    type=click.Choice(CHUNKING),
    **_default("chunking"),
    help="With --chunk-tokens, how passages are embedded: naive (each passage on its own, "
    "with the model's special tokens and prompt, as chunk-then-embed does) or late (the whole "
    "text through the model once, each passage pooled from that pass's token states with the "
    "model's pooling, then its Dense and Normalize; a text longer than --max-length in "
    "overlapping windows, each passage from the one it sits deepest in). Late chunks are not "
    "kept in a vector store.",
    **_env("CHUNKING"),
)
@click.option(
    "--chunk-layout",
    type=click.Choice(CHUNK_LAYOUTS),
    **_default("chunk_layout"),
    help="With --chunk-tokens: rows (a row per passage) or nested (a row per input row, as "
    "without passages: the passages' spans in chunk_spans, a list of {start, end}, and every "
    "vector column and n_tokens a list with one entry per passage, in order).",
    **_env("CHUNK_LAYOUT"),
)
@click.option(
    "--chunk-overlap",
    type=int,
    **_default("chunk_overlap"),
    help="Tokens shared by consecutive passages (--chunk-tokens) or windows (--long-text chunk).",
    **_env("CHUNK_OVERLAP"),
)
@click.option(
    "--max-text-bytes",
    type=int,
    **_default("max_text_bytes"),
    help="A text longer than this (bytes of UTF-8) is not read, hashed or tokenized: its row "
    "gets null vectors and the shard record names it (refused_rows, refused), so that one huge "
    "cell cannot exhaust memory. 8 MiB is some 2 million tokens.",
    **_env("MAX_TEXT_BYTES"),
)
@click.option(
    "--output-dtype",
    "output_dtypes",
    multiple=True,
    type=click.Choice(OUTPUT_DTYPES),
    help="How vectors are stored: float32; float16 (half the size); int8 (a quarter; "
    "per-dimension ranges fixed once per job, in the file metadata); binary (sign bits, "
    "uint8[dim/8], 1/32 of the size, for Hamming search). Repeatable: each encoding of the "
    "same vectors in its own column, <column>_<dtype>, from one forward pass. [default: float32]",
    **_env("OUTPUT_DTYPE"),
)
@click.option(
    "--truncate-dim",
    type=int,
    default=None,
    help="Keep only the first D dimensions (Matryoshka models), renormalized with "
    "--normalize. [default: all]",
    **_env("TRUNCATE_DIM"),
)
@click.option(
    "--calibration",
    default=None,
    help="With --output-dtype int8: take the ranges from another job's "
    "_embed_etl/calibration.json, or compute them on the texts of this Parquet file. "
    "[default: 2,048 rows sampled from the inputs]",
    **_env("CALIBRATION"),
)
@click.option(
    "--reuse",
    "reuse",
    multiple=True,
    metavar="URI",
    help="Also take vectors from here: another job's --output (last night's) or a --store, "
    "on disk or object storage; read only. Its recipe (model files, columns, lengths, prompt, "
    "precision) must be this job's, or the run is refused naming what differs. Repeatable.",
    **_env("REUSE"),
)
@click.option(
    "--store",
    default=None,
    metavar="URI",
    help="The vector store this job looks texts up in first and adds its new vectors to; give "
    "several jobs the same one to share their work. [default: <output>/_embed_etl/vectors/]",
    **_env("STORE"),
)
@click.option(
    "--no-reuse",
    is_flag=True,
    help="Embed every row, repeats included; consult and keep no vector store.",
    **_env("NO_REUSE"),
)
@click.option(
    "--batch-size",
    "--max-batch-size",
    "batch_size",
    type=int,
    **_default("batch_size"),
    help="Most rows in one batch.",
    **_env("BATCH_SIZE"),
)
@click.option(
    "--batch-tokens",
    type=int,
    default=None,
    help="Padded-token budget per batch: rows x longest row stays under it. Short texts "
    "travel in big batches, long ones in small. [default: 2048 on CPU, 32768 on GPU]",
    **_env("BATCH_TOKENS"),
)
@click.option(
    "--device",
    **_default("device"),
    help=f"Where the model runs: {DEVICES_HELP}. auto = CUDA, else MPS, else CPU.",
    **_env("DEVICE"),
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    **_default("dtype"),
    help="Compute precision (autocast). auto = float32 on CPU and MPS (exact), bfloat16 "
    "(or float16) on CUDA. Vectors are pooled in float32; --output-dtype sets how they are stored.",
    **_env("DTYPE"),
)
@click.option(
    "--num-workers",
    type=int,
    default=None,
    help="Processes that read and tokenize ahead of the model; 0 = a thread of the job does "
    "it, the tokenizer using every core (faster on CPU and GPU alike: a forked reader "
    "tokenizes on one core). [default: 0]",
    **_env("NUM_WORKERS"),
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Torch intra-op threads. [default: the CPU cores this process may use]",
    **_env("THREADS"),
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr. [default: only when stderr is a terminal]",
    **_env("PROGRESS"),
)
@click.option(
    "--workers",
    type=int,
    **_default("workers"),
    help="Worker processes (Ray actors with --engine ray), each with its own copy of the "
    "model, claiming whole shards. On CPU they split the cores.",
    **_env("WORKERS"),
)
@click.option(
    "--devices",
    default=None,
    help="Comma-separated devices, one worker each, e.g. cuda:0,cuda:1.",
    **_env("DEVICES"),
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    **_default("engine"),
    help="local: processes on this machine. ray: actors on a Ray cluster "
    "(pip install 'embed-etl[ray]'); --output must be on storage every node sees.",
    **_env("ENGINE"),
)
@click.option(
    "--ray-address",
    default=None,
    help="Ray cluster to join (e.g. ray://head:10001). [default: RAY_ADDRESS, else a local Ray]",
    **_env("RAY_ADDRESS"),
)
@click.option(
    "--ray-timeout",
    type=float,
    **_default("ray_timeout"),
    help="Seconds for every Ray actor to be placed on a node and load the model; then the job "
    "stops with what the nodes offer.",
    **_env("RAY_TIMEOUT"),
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Redo every shard and replace outputs, even ones made with other options. Without "
    "it, a rerun skips done shards and refuses an --output made with other options.",
    **_env("OVERWRITE"),
)
@click.option(
    "--only-failed",
    is_flag=True,
    help="Redo only the shards that `status` lists as failed.",
    **_env("ONLY_FAILED"),
)
@click.option(
    "--shard-index",
    type=int,
    default=None,
    help="With --num-shards: run only this part (0-based) of the inputs; see `plan`.",
    **_env("SHARD_INDEX"),
)
@click.option(
    "--num-shards",
    type=int,
    default=None,
    help="Split the inputs into this many disjoint parts (round-robin over sorted names).",
    **_env("NUM_SHARDS"),
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Debug logging and tracebacks.", **_env("VERBOSE")
)
def run(verbose: bool, output: str, **options: Any) -> None:
    """Embed INPUT (Parquet files, directories or globs) into --output.

    Prints one JSON summary line on stdout when done; progress and logs go to stderr.
    """
    setup_logging(verbose)
    # Schedulers stop tasks with SIGTERM: unwind like Ctrl-C, so temporary files and claims
    # are cleaned up and a rerun finishes the job.
    signal.signal(signal.SIGTERM, _interrupt)

    def job() -> int:
        from etl import run_job

        cfg = config_from_options(output_dir=output, **options)
        summary = run_job(cfg)
        echo(json.dumps(summary.to_dict()))
        return OK if summary.ok else FAILED

    sys.exit(guarded(job, verbose))


@cli.command(
    epilog=exit_codes_help(
        {OK: "every shard done", FAILED: "some failed", INCOMPLETE: "some pending or running"}
    )
)
@click.option("-o", "--output", required=True, help="The job's output directory.", **_env("OUTPUT"))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, for scripts.")
@click.argument("inputs", nargs=-1, metavar="[INPUT...]")
def status(output: str, as_json: bool, inputs: tuple[str, ...]) -> None:
    """Show done, failed, pending and running shards of an output directory.

    INPUT defaults to the inputs the job was first run with.
    """
    setup_logging(False)

    def show() -> int:
        from etl import job_status

        report = job_status(output, inputs)
        echo(json.dumps(report.to_dict()) if as_json else report.to_text())
        counts = report.counts()
        if counts["failed"]:
            return FAILED
        return INCOMPLETE if counts["pending"] or counts["running"] else OK

    sys.exit(guarded(show, False))


@cli.command(
    epilog=exit_codes_help({OK: "every shard checks out", FAILED: "some shard has a problem"})
)
@click.option(
    "-o", "--output", required=True, help="The job's output directory or URI.", **_env("OUTPUT")
)
@click.option(
    "--sample",
    type=float,
    default=1.0,
    show_default=True,
    help="Check vectors (NaN, unit length) on this fraction of rows; ids and nulls on all.",
)
@click.option(
    "--recompute",
    type=int,
    default=0,
    show_default=True,
    metavar="N",
    help="Also embed N rows, sampled over every shard, again with the job's recipe (the "
    "model, never a vector store) and compare them with the stored vectors: lowest cosine "
    "and largest difference per column. Loads the model.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help=f"With --recompute: where the model runs ({DEVICES_HELP}).",
)
@click.option(
    "--model",
    default=None,
    help="With --recompute: the local copy of the job's model to load (a directory or hub id), "
    "in place of the one job.json names; refused unless its files are the job's.",
)
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="With --recompute: allow the job's model to run the Python code it ships. Never taken "
    "from job.json: whoever wrote the output does not decide what runs here.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, for scripts.")
@click.argument("inputs", nargs=-1, metavar="[INPUT...]")
def verify(
    output: str,
    sample: float,
    recompute: int,
    device: str,
    model: str | None,
    trust_remote_code: bool,
    as_json: bool,
    inputs: tuple[str, ...],
) -> None:
    """Read the outputs back and check them against their inputs and the job.

    Per shard: every input row once and in input order, row counts as the manifest says,
    vector columns of the promised type and width, no NaN or infinity, unit length where the
    job normalized, null vectors exactly where the text was null (or over --max-text-bytes),
    the job's fingerprint.
    INPUT defaults to the inputs the job was first run with.
    """
    setup_logging(False)

    def check() -> int:
        from etl import verify_job

        report = verify_job(output, inputs, sample, recompute, device, trust_remote_code, model)
        echo(json.dumps(report.to_dict()) if as_json else report.to_text())
        return OK if report.ok else FAILED

    sys.exit(guarded(check, False))


@cli.command(
    epilog=exit_codes_help(
        {
            OK: "done",
            ExitCode.ERROR: "the sample could not be embedded",
            ExitCode.USAGE: "bad options",
        }
    )
)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "--num-shards",
    type=int,
    default=None,
    help="How many parts to split into (without --estimate: required).",
)
@click.option("-o", "--output", default=None, help="Output directory (its files are never inputs).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, for scripts.")
@click.option(
    "--estimate",
    is_flag=True,
    help="Instead of the parts: what `run` with the same options would cost. Rows (footers), "
    "tokens (a sample through the model's tokenizer and truncation), the share the stores "
    "already hold; with --calibrate, hours. Loads no model unless --calibrate.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="With --estimate: embed the sample on this machine, with the job's options, and turn "
    "tokens into hours (one device, --fleet devices, device-hours).",
)
@click.option(
    "--sample-rows",
    type=click.IntRange(min=1),
    default=ESTIMATE_ROWS,
    show_default=True,
    help="Rows drawn for --estimate from up to 4 row groups of up to 64 pending shards, and "
    "tokenized.",
)
@click.option(
    "--calibrate-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Rows of the sample --calibrate embeds. [default: 8192 on a CPU, all on a GPU]",
)
@click.option(
    "--fleet",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="With --calibrate: also the hours on this many devices.",
)
def plan(
    inputs: tuple[str, ...],
    num_shards: int | None,
    output: str | None,
    as_json: bool,
    estimate: bool,
    calibrate: bool,
    sample_rows: int,
    calibrate_rows: int | None,
    fleet: int,
    **options: Any,
) -> None:
    """Show which input files each of --num-shards parts gets, or (--estimate) what the job
    will cost.

    Part I is what `embed-etl run INPUT... --shard-index I --num-shards N` embeds: N processes
    or scheduler tasks given the same INPUT never overlap and together cover every file.

    With --estimate, every option of `run` applies (the model, --max-length, --long-text,
    --prompt, --store, --reuse, --device, --batch-tokens ...), as the job would use them.
    """
    setup_logging(options["verbose"])

    def show() -> int:
        if estimate:
            sizes = (sample_rows, calibrate_rows, fleet)
            return _estimate(inputs, num_shards, output, as_json, calibrate, sizes, options)
        given = _given(("calibrate", "sample_rows", "calibrate_rows", "fleet", *options))
        if given:
            raise ConfigError(f"{given[0]}: only with --estimate (it has no effect on the parts)")
        if num_shards is None:
            raise ConfigError("--num-shards: required (or --estimate for the job's cost)")
        from etl import plan_parts

        result = plan_parts(inputs, num_shards, output)
        echo(json.dumps(result.to_dict()) if as_json else result.to_text())
        return OK

    sys.exit(guarded(show, options["verbose"]))


def _given(names: tuple[str, ...]) -> list[str]:
    """The options among ``names`` given on this command line, as the user wrote them."""
    from click.core import ParameterSource

    context = click.get_current_context()
    found = []
    for param in context.command.params:
        source = context.get_parameter_source(param.name)
        if (
            param.name in names
            and param.name != "verbose"
            and source == ParameterSource.COMMANDLINE
        ):
            found.append(param.opts[-1])
    return found


def _estimate(inputs, num_shards, output, as_json, calibrate, sizes, options) -> int:
    from etl.estimate import estimate_options

    given = {k: v for k, v in options.items() if k != "verbose"}
    given.update(inputs=inputs, output_dir=output, num_shards=num_shards)
    sample_rows, calibrate_rows, fleet = sizes
    result = estimate_options(given, sample_rows, calibrate, fleet, calibrate_rows)
    echo(json.dumps(result.to_dict()) if as_json else result.to_text())
    return OK


_ESTIMATE_SKIPS = {"inputs", "output", "num_shards"}  # plan has its own
plan.params += [p for p in run.params if p.name not in _ESTIMATE_SKIPS]


cli.add_command(store)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """The CLI in-process: ends with SystemExit, as click does."""
    cli(prog_name="embed-etl")


def entry() -> None:
    """The `embed-etl` command: main(), then, once the job is over and everything is flushed,
    an exit that skips the interpreter's teardown (about 0.3 s of torch's module cleanup, a
    fifth of a one-row run). Not under Ray, whose exit hooks disconnect the driver."""
    try:
        main()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    if "ray" in sys.modules:
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A reader that closed the pipe early (`| head`) leaves nothing to flush to.
        with contextlib.suppress(OSError):
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    entry()
