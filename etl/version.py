"""The package version, recorded in every output file and manifest record, and the version of
the code that computes vectors, which the fingerprint covers."""

__version__ = "0.2.0"

# Bump whenever a change alters any vector (tokenizing, truncation, the model code, pooling,
# heads, normalizing, encodings). It is part of every fingerprint, so a resumed job or a vector
# store of another version is never mixed with this one's vectors. tests/test_golden.py fails
# when the vectors of fixed texts change and this number did not.
VECTOR_CODE_VERSION = 1
