"""One worker: a model loaded once, and the loop that turns the shards it claims into files.

shard_worker  load the tokenizer and the model, check the largest batch, process shards
runner        the loop: reader items -> model -> writers; then the manifest and the claims
batches       each batch through the model in flight into its shard's writer, in order
progress      the progress bar, counting rows as they complete
"""
