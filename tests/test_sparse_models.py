"""The tiny sparse and multi-vector models of tests/sparse_models.py load back through
sentence-transformers' own classes, offline, and give non-trivial outputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests import sparse_models as sm

pytest.importorskip("sentence_transformers.sparse_encoder")
pytest.importorskip("sentence_transformers.multi_vector_encoder")

ROWS = sm.texts(24, seed=7)
V = len(sm.VOCAB)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sparse-models")
    return {
        "max": sm.build_splade_max(root / "splade-max"),
        "sum": sm.build_splade_sum(root / "splade-sum"),
        "free": sm.build_inference_free(root / "inference-free"),
        "free-doc": sm.build_inference_free(root / "inference-free-doc", static_side="document"),
        "mv": sm.build_multi_vector(root / "multi-vector"),
    }


def _load_sparse(path):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(str(path), device="cpu", local_files_only=True)


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_rows_differ_in_length():
    lengths = [len(r.split()) for r in ROWS]
    assert min(lengths) == 1 and max(lengths) >= 30


def test_splade_max_keeps_the_top_k_of_the_full_row(built):
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    model = _load_sparse(built["max"])
    assert isinstance(model[0], Transformer) and model[0].transformer_task == "fill-mask"
    assert isinstance(model[1], SpladePooling) and model[1].pooling_strategy == "max"
    assert model.max_active_dims == sm.MAX_ACTIVE_DIMS
    full = model.encode(ROWS, max_active_dims=V, convert_to_sparse_tensor=False)  # (N, V)
    assert full.shape == (len(ROWS), V) and bool((full >= 0).all())
    nnz = (full > 0).sum(1)
    assert bool((nnz > sm.MAX_ACTIVE_DIMS).all()) and bool((nnz < V).all())  # the top-k bites
    ref = sm.sparse_reference(built["max"], ROWS)
    for row, (index, values) in zip(full, ref, strict=True):
        top = np.sort(np.argsort(-row.numpy())[: sm.MAX_ACTIVE_DIMS])
        np.testing.assert_array_equal(index, top)
        np.testing.assert_allclose(values, row.numpy()[index], atol=1e-5)  # other batches


def test_splade_sum_is_sparse_not_empty(built):
    model = _load_sparse(built["sum"])
    assert model[1].pooling_strategy == "sum" and model.max_active_dims is None
    ref = sm.sparse_reference(built["sum"], ROWS)
    for index, values in ref:
        assert 0 < len(index) < V
        assert bool((values > 0).all()) and index.dtype == np.int64
    single = sm.sparse_reference(built["sum"], ROWS[:1])[0]
    np.testing.assert_array_equal(single[0], ref[0][0])  # alone == batched with longer rows
    np.testing.assert_allclose(single[1], ref[0][1], atol=1e-5)


def test_inference_free_routes_documents_to_splade_and_queries_to_the_lookup(built):
    from sentence_transformers.base.modules import Router
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

    model = _load_sparse(built["free"])
    router = model[0]
    assert isinstance(router, Router) and router.default_route == "document"
    assert isinstance(router.sub_modules["query"][0], SparseStaticEmbedding)
    plain = sm.sparse_reference(built["free"], ROWS)
    document = sm.sparse_reference(built["free"], ROWS, "document")
    query = sm.sparse_reference(built["free"], ROWS, "query")
    tokenizer = _tokenizer(built["free"] / "query_0_SparseStaticEmbedding")
    weight = sm.static_weights()
    for row, (pi, pv), (di, dv), (qi, qv) in zip(ROWS, plain, document, query, strict=True):
        np.testing.assert_array_equal(pi, di)  # encode() takes the default (document) route
        np.testing.assert_allclose(pv, dv, atol=1e-6)
        assert 0 < len(di) < V
        ids = tokenizer(row, add_special_tokens=False, truncation=True)["input_ids"]
        ids = set(ids)  # truncated to the tokenizer's model_max_length, without specials
        present = np.array(sorted(i for i in ids if weight[i] > 0))
        np.testing.assert_array_equal(qi, present)  # each token once, its weight, no specials
        np.testing.assert_allclose(qv, weight.numpy()[present], atol=0)


def test_inference_free_flipped_has_the_lookup_on_the_document_side(built):
    weight = sm.static_weights().numpy()
    plain = sm.sparse_reference(built["free-doc"], ROWS)
    query = sm.sparse_reference(built["free-doc"], ROWS, "query")
    for (pi, pv), (qi, _) in zip(plain, query, strict=True):
        np.testing.assert_allclose(pv, weight[pi], atol=0)
        assert not np.array_equal(pi, qi)


def test_multi_vector_token_counts_per_side(built):
    import string

    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    model = MultiVectorEncoder(str(built["mv"]), device="cpu", local_files_only=True)
    assert isinstance(model[2], MultiVectorMask) and model.prompts["document"] == "[D] "
    tokenizer = _tokenizer(built["mv"])
    punct = set(tokenizer.convert_tokens_to_ids([p for p in string.punctuation if p in sm.VOCAB]))
    # encode() adds no marker and cuts at the tokenizer's limit; encode_document() adds "[D] "
    # and cuts at document_length; both drop the skiplist (no task counts as a document)
    sides = [("encode", "", sm.MAX_LENGTH), ("document", "[D] ", sm.MV_DOCUMENT_LENGTH)]
    for side, prompt, length in sides:
        out = sm.multi_vector_reference(built["mv"], ROWS, side)
        for row, vectors in zip(ROWS, out, strict=True):
            ids = tokenizer(prompt + row, truncation=True, max_length=length)["input_ids"]
            if prompt:
                assert ids[1] == sm.VOCAB.index("[D]")  # the marker is one token after [CLS]
            assert vectors.shape == (sum(i not in punct for i in ids), sm.MV_DIM)
            assert vectors.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    queries = sm.multi_vector_reference(built["mv"], ROWS, "query")
    assert {q.shape for q in queries} == {(sm.MV_QUERY_LENGTH, sm.MV_DIM)}  # [MASK]-expanded
