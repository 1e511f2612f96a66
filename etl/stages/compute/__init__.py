"""The compute side: batches through the model on its device, pooled into vectors.

device        where the model runs, in what precision, on how many threads
encoder       the model, cut to the deepest layer asked for: one forward pass per batch
inflight      batches queued on the device, their vectors collected later
pooling       hidden states -> one vector per sequence (every sentence-transformers mode)
head          the model's Dense layers after pooling
sparse        a sparse model's weights from its logits or saved weights
sparse_model  a sparse model on its device
"""
