"""embed-etl: Parquet shards of text in, sentence-embedding columns out."""

__version__ = "0.1.0"
