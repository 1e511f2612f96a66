"""From pooled float32 vectors to what the output stores: fewer dimensions, unit length, and
the output dtype (float32, float16, int8 with fixed ranges, or sign bits).

All functions take and return numpy arrays of shape (N, D) and leave their inputs alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

INT8_LEVELS = 255  # int8 codes -128..127 span [min, max] of each dimension in 255 steps


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows; an all-zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, 1)
    return vectors / np.maximum(norms, 1e-12)


def finish(vectors: np.ndarray, truncate_dim: int | None, normalize: bool) -> np.ndarray:
    """Keep the first truncate_dim dimensions, then normalize (so truncated vectors are unit)."""
    if truncate_dim is not None:
        vectors = vectors[:, :truncate_dim]
    return l2_normalize(vectors) if normalize else vectors


def arrow_type(output_dtype: str, dim: int) -> pa.DataType:
    """The Parquet column type of one vector column."""
    if output_dtype == "binary":
        return pa.list_(pa.uint8(), dim // 8)
    value = {"float32": pa.float32(), "float16": pa.float16(), "int8": pa.int8()}[output_dtype]
    return pa.list_(value, dim)


def sparse_type(output_dtype: str) -> pa.DataType:
    """The Parquet column type of a sparse vector: its nonzero weights, sorted by index."""
    value = {"float32": pa.float32(), "float16": pa.float16()}[output_dtype]
    return pa.list_(pa.struct([pa.field("index", pa.int32()), pa.field("value", value)]))


def encode(
    vectors: np.ndarray, output_dtype: str, ranges: dict[str, Any] | None = None
) -> np.ndarray:
    """(N, D) float32 -> the stored values: (N, D) float32/float16/int8 or (N, D/8) uint8."""
    if output_dtype == "float32":
        return vectors.astype(np.float32, copy=False)
    if output_dtype == "float16":
        return vectors.astype(np.float16)
    if output_dtype == "int8":
        return quantize_int8(vectors, ranges)
    if output_dtype == "binary":
        return pack_bits(vectors)
    raise ValueError(f"unknown output dtype {output_dtype!r}")


def quantize_int8(vectors: np.ndarray, ranges: dict[str, Any]) -> np.ndarray:
    """code = round((x - min) / step) - 128, clipped; step = (max - min) / 255 per dimension."""
    low, step = _low_step(ranges)
    codes = np.rint((vectors - low) / step) - 128.0
    return np.clip(codes, -128, 127).astype(np.int8)


def dequantize_int8(codes: np.ndarray, ranges: dict[str, Any]) -> np.ndarray:
    """The inverse of quantize_int8, up to half a step: x = (code + 128) * step + min."""
    low, step = _low_step(ranges)
    return ((codes.astype(np.float32) + 128.0) * step + low).astype(np.float32)


def _low_step(ranges: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    low = np.asarray(ranges["min"], dtype=np.float32)
    high = np.asarray(ranges["max"], dtype=np.float32)
    step = (high - low) / INT8_LEVELS
    return low, np.where(step > 0, step, np.float32(1.0))  # a constant dimension: any step


def int8_ranges(vectors: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension min and max of a calibration sample (N, D)."""
    return {"min": vectors.min(axis=0).tolist(), "max": vectors.max(axis=0).tolist()}


def pack_bits(vectors: np.ndarray) -> np.ndarray:
    """One bit per dimension, 1 where the value is positive; 8 dimensions per byte, first
    dimension in the highest bit (numpy's packbits order, as sentence-transformers' ubinary)."""
    return np.packbits(vectors > 0, axis=1)


def hamming(packed: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Bits that differ between each packed row (N, D/8) and one packed query (D/8,)."""
    return np.unpackbits(np.bitwise_xor(packed, query), axis=1).sum(axis=1)


def to_arrow(values: np.ndarray, nulls: np.ndarray | None) -> pa.Array:
    """(N, W) stored values -> fixed_size_list array; rows where ``nulls`` is True are null."""
    width = values.shape[1]
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width, mask=nulls)
