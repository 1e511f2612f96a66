"""embed-etl: Parquet shards of text in, sentence-embedding columns out.

The public API, used by the CLI, the Ray actors and anyone embedding from Python:

    from etl import JobConfig, run_job
    summary = run_job(JobConfig(inputs=("corpus/",), output_dir="vectors/"))

How a run flows, and where each step lives:

    config.JobConfig     every option, validated once (options.config_from_options: from
                         what a command line gives, comma lists and all, as the CLI builds it)
    plan.plan_job        inputs, the output spec and its fingerprint, what is left (no model)
    job.run_job          start the engine, calibrate (int8), record the job, run
    engines/             where shards run: this process, N processes, Ray actors
    worker/              one model loaded once; claim, embed, write, record each shard
    stages/              per shard: source -> tokens -> batching -> loader -> encoder
                         -> pooling -> vectors -> sink
    reuse/               each text embedded once: repeats copied, a store of vectors consulted,
                         compacted, collected and checked (check_store, compact_store, ...)
    state/               the job's records under <output>/_embed_etl/
    storage              the one seam to where outputs live

Importing this package does not import torch or transformers.
"""

from etl.config import JobConfig
from etl.errors import ConfigError, EmbedEtlError, InputError, ModelError, OutputConflictError
from etl.job import run_job
from etl.options import config_from_options
from etl.plan import JobPlan, plan_job, plan_parts
from etl.reuse.admin import check_store, compact_store, gc_store, store_stats
from etl.state.status import StatusReport, job_status
from etl.summary import JobSummary
from etl.verify import VerifyReport, verify_job
from etl.version import __version__
from etl.worker.shard_worker import ShardWorker

__all__ = [
    "ConfigError",
    "EmbedEtlError",
    "InputError",
    "JobConfig",
    "JobPlan",
    "JobSummary",
    "ModelError",
    "OutputConflictError",
    "ShardWorker",
    "StatusReport",
    "VerifyReport",
    "__version__",
    "check_store",
    "compact_store",
    "config_from_options",
    "gc_store",
    "job_status",
    "plan_job",
    "plan_parts",
    "run_job",
    "store_stats",
    "verify_job",
]
