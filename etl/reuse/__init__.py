"""Embed each text once: repeats within a shard, across shards and across runs cost nothing.

Every text is known by a 128-bit hash of exactly what the model sees (the prompt and the text).
Within a shard, each distinct text goes through the model once and its vector is copied to every
row that holds it. Across shards and runs, a content-addressed store keeps the vector of every
text a job embedded, keyed by the recipe's fingerprint (the model's files, the code, the
columns, lengths, prompt and precision) and the text's hash; later shards, reruns and other jobs
look their texts up there first.

hashing  the text hash
segment  the store's file format: one immutable segment of records per shard
store    a store: its recipe (store.json) and its segments
lookup   the reader's side: find a block of hashes in the stores, fetch the vectors found
shard    the reader's side, per shard: which rows to embed, which to copy, which to fetch
spill    the writer's side, per shard: the new vectors, read back for repeats, then published
plan     the stores a job consults and adds to, resolved and checked before anything runs
"""
