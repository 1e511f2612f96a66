"""The stages one shard goes through, in order; each knows nothing of engines or job state.

source     stream the shard's rows: record batches of only the needed columns
tokenizer  the model's tokenizer: special tokens, padding side, prompt length
tokens     prompt + text -> ids, truncated or cut into windows, every row's token count
batching   sort rows by length inside a window, cut batches on a padded-token budget, pad
loader     the above ahead of the model: read_ahead's thread (CPU), DataLoader workers (GPU)
device     where the model runs, in what precision
encoder    the model, cut to the deepest layer asked for: one forward pass per batch
inflight   batches queued on the device, their vectors collected later into recycled buffers
pooling    hidden states -> one vector per sequence (every sentence-transformers mode)
head       the model's Dense layers after pooling
window     vectors placed by row; a long text's windows joined; token vectors in text order
vectors    fewer dimensions, unit length, float16 / int8 / sign bits
sink       the Parquet file, published only when whole
"""
