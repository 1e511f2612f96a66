"""`make bench`: this job against what users would write instead, on the same rows and machine.

Not part of the installed package. Run with `python -m benchmarks` (see --help):
  speed   this job, sentence-transformers and the one-text loop on the same corpus rows
  cold    a one-row job beside the sentence-transformers script, split into its parts
          (skip with --no-cold-start)
  memory  peak RSS of the whole job on 10k rows and on the whole corpus (--memory)
  sizes   one shard written with each --output-dtype (--sizes)
  storage local disk against a local S3 server: rows/s, requests per shard, memory (--storage)
  verify  embed-etl verify on the whole corpus: time, peak memory, and on 4x the rows (--verify)
  retrieval  recall@10 of passages, naive against late chunking (--retrieval, or on its own:
          python -m benchmarks.retrieval)
"""
