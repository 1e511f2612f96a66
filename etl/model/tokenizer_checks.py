"""Whether `tokenizers` alone reproduces a model's tokenizer, read from its two JSON files.

The backend rule (etl.model.backend) asks this before anything is loaded, and plain_tokenizer
(etl.stages.read.tokenizer) asks it again before it builds a PlainTokenizer: one answer for both,
so transformers' tokenizer is never replaced by one that splits a text differently.
"""

from __future__ import annotations

import json
from pathlib import Path

# tokenizer_config.json classes whose tokenizer.json is the whole tokenizer.
PLAIN_TOKENIZER_CLASSES = ("BertTokenizer", "BertTokenizerFast")
# tokenizer_config.json options and the BertNormalizer fields of tokenizer.json they must match.
NORMALIZER_OPTIONS = {
    "do_lower_case": "lowercase",
    "strip_accents": "strip_accents",
    "tokenize_chinese_chars": "handle_chinese_chars",
}


def plain_tokenizer_applies(path: str | Path) -> bool:
    """A BERT tokenizer whose tokenizer.json says everything tokenizer_config.json does: a
    BertNormalizer agreeing with its options, a padding token, no code of its own."""
    path = Path(path)
    try:
        config = json.loads((path / "tokenizer_config.json").read_text())
        saved = json.loads((path / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return False
    if config.get("tokenizer_class") not in PLAIN_TOKENIZER_CLASSES or config.get("auto_map"):
        return False
    normalizer = saved.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return False
    for option, field in NORMALIZER_OPTIONS.items():
        if option in config and config[option] != normalizer.get(field):
            return False  # transformers would rebuild the normalizer from tokenizer_config
    pad = config.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    vocab = (saved.get("model") or {}).get("vocab") or {}
    added = {t.get("content") for t in saved.get("added_tokens") or []}
    return isinstance(pad, str) and (pad in vocab or pad in added)
