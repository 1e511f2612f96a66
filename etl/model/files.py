"""The names of a model folder's weight files: one file, or shards, in safetensors or a pickle.

transformers saves ``model.safetensors`` (or ``pytorch_model.bin``), and shards named like
``model-00001-of-00002.safetensors`` past its size limit; a sentence-transformers module folder
(2_Dense/, a sparse model's static weights) holds one file. Every reader of a model folder, and
the hub download, names the files from here.
"""

from __future__ import annotations

from pathlib import Path

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"  # a pickle: read with weights_only=True (etl.model.runtime)
WEIGHT_FILES = (SAFETENSORS, PYTORCH_BIN)  # one file's weights, the first found wins
SAFETENSORS_GLOB = "model*.safetensors"  # the weights in one file or in shards
PYTORCH_BIN_GLOB = "pytorch_model*.bin"


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder, in order: its safetensors (one file or shards) if
    it has any, else its .bin files; empty when it has neither."""
    return sorted(folder.glob(SAFETENSORS_GLOB)) or sorted(folder.glob(PYTORCH_BIN_GLOB))
