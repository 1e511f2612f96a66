"""The stages one shard goes through, by side; each knows nothing of engines or job state.

read      the shard's rows to padded batches of token ids, ahead of the model
compute   batches through the model on its device, pooled into vectors
write     vectors placed by row, encoded, and the output file published whole
"""
