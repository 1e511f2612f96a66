"""The reading side: a shard's rows to padded batches of token ids, ahead of the model.

source        stream the shard's rows: record batches of only the needed columns
blocks        a shard read once, a block at a time, cut into windows; huge texts let go
tokenizer     the model's tokenizer: special tokens, padding side, prompt length
tokens        prompt + text -> ids, truncated, every row's token count
joined        many texts tokenized as a few joined strings, where that gives the same ids
sequences     a window's id sequences stored flat: cut, truncated, padded in numpy
chunks        a long text's windows (--long-text chunk)
passages      texts cut into passages of at most N tokens (spans)
passage_rows  a block of rows as a block of passage rows (--chunk-tokens)
late          a passage's tokens in its whole text's pass (--chunking late)
batching      sort by length within a window, cut batches on a padded-token budget
token_mask    which tokens a multi-vector model outputs
settled       a tokenized window as the padded batches the model runs
loader        per shard: read, tokenize, plan and send the batches
read_ahead    the loader in a thread (CPU) or DataLoader processes (GPU)
"""
