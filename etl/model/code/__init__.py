"""The code that computes a model's hidden states: one ModelCode interface, one implementation each.

base               the ModelCode interface and the names of its implementations (no torch)
plain_bert         a plain BERT in plain torch, straight from model.safetensors (no transformers)
transformers       transformers' AutoModel: every other architecture, FlashAttention-2 on a GPU
registry           each name etl.model.backend chooses, mapped to the implementation that runs it

Nothing is imported here, so the rule can read base's names without loading torch.
"""
