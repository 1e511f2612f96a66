"""The writing side: vectors placed by row, encoded, and the output file published whole.

window        one window's vectors placed by row; a long text's windows joined
token_rows    token vectors of a window, in text order
sparse_rows   sparse vectors of a window as (index, value) lists
vectors       fewer dimensions, unit length, float16 / int8 / sign bits
nested        passage rows folded into one row per input row (--chunk-layout nested)
sink          the Parquet file, published only when whole; the store's new segment
"""
