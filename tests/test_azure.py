"""az:// against Azurite, the Azure Storage emulator, started on 127.0.0.1 by these tests with a
fresh workspace: the storage's guarantees one by one (Azurite honours If-None-Match: * and
If-Match on Put Blob), then whole jobs, `--workers 2`, `status` and `verify`. The job finds the
emulator through the environment obstore reads (AZURE_STORAGE_USE_EMULATOR,
AZURITE_BLOB_STORAGE_URL) only; the tests plant faults with Azure's own SDK."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, set_environment, tiny_texts, without_row, write_shard

# Azurite's well-known development account (public, the same in every Azurite).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_DIR = REPO / ".azurite"
SHARDS = 3


def _azurite_bin() -> str:
    """Azurite's blob server, installed into .azurite by `make test` (or here, the same way)."""
    script = AZURITE_DIR / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed to run Azurite, the Azure Storage emulator")
    if not script.exists():
        spec = os.environ.get("AZURITE_SPEC", "azurite@3")
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix",
             str(AZURITE_DIR), spec],
            check=True, timeout=600,
        )  # fmt: skip
    return str(script)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite on 127.0.0.1 with a fresh workspace; the environment obstore reads points at it."""
    script = _azurite_bin()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace = tmp_path_factory.mktemp("azurite")
    server = subprocess.Popen(
        ["node", script, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(workspace), "--silent", "--skipApiVersionCheck", "--disableTelemetry"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # wait until it answers (with an error: the request is not signed)
        try:
            urllib.request.urlopen(f"{url}/{ACCOUNT}?comp=list", timeout=1).close()
            break
        except OSError as exc:
            if getattr(exc, "code", None):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("Azurite did not start")
            time.sleep(0.05)
    settings = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": url}
    with set_environment(settings):
        yield f"{url}/{ACCOUNT}"
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def container(azurite):
    """A new container, and Azure's own SDK to look at it and plant faults with."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(azurite, credential={"account_name": ACCOUNT, "account_key": KEY})
    name = f"t{uuid.uuid4().hex[:12]}"
    return service.create_container(name)


def _blobs(container, prefix: str = "") -> list[str]:
    return sorted(b.name for b in container.list_blobs(name_starts_with=prefix))


def _storage(container, prefix: str = "out"):
    from etl.storage import open_storage

    return open_storage(f"az://{container.container_name}/{prefix}")


def test_of_many_concurrent_creates_exactly_one_wins(container):
    from etl.storage import open_storage

    uri = f"az://{container.container_name}/out"
    stores = [open_storage(uri) for _ in range(8)]
    won: list[int] = []
    barrier = threading.Barrier(len(stores))

    def create(index: int) -> None:
        barrier.wait()
        if stores[index].create("claims/a.json", f"{index}".encode()):
            won.append(index)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    held = container.download_blob("out/claims/a.json").readall()
    assert held == f"{won[0]}".encode()
    assert not stores[0].create("claims/a.json", b"late")  # If-None-Match: * honoured


def test_a_swap_whose_etag_went_stale_fails_and_changes_nothing(container, monkeypatch):
    storage, other = _storage(container), _storage(container)
    storage.put("claims/b.json", b"mine")
    real_put = storage._put

    def put_after_someone_else(key, data, mode):
        other.put(key, b"mine")  # same bytes, a new ETag: only If-Match can tell
        return real_put(key, data, mode)

    monkeypatch.setattr(storage, "_put", put_after_someone_else)
    assert storage.swap("claims/b.json", b"mine", b"taken over") is False
    monkeypatch.undo()
    assert container.download_blob("out/claims/b.json").readall() == b"mine"
    assert storage.swap("claims/b.json", b"mine", b"taken over") is True
    assert storage.swap("claims/b.json", b"mine", b"again") is False  # content moved on
    assert storage.read("claims/b.json") == b"taken over"


def test_touch_moves_the_modification_time(container):
    storage = _storage(container)
    storage.put("claims/c.json", b"held")
    before = storage.stat("claims/c.json").mtime_ns
    while storage.stat("claims/c.json").mtime_ns == before:  # Last-Modified is in seconds
        storage.touch("claims/c.json")
    assert storage.read("claims/c.json") == b"held"


def test_an_upload_is_invisible_until_published_and_gone_when_discarded(container, monkeypatch):
    monkeypatch.setenv("EMBED_ETL_PART_SIZE", str(64 << 10))  # several blocks per upload
    storage = _storage(container)
    data = os.urandom(300 << 10)
    upload = storage.upload("part-0.parquet")
    for start in range(0, len(data), 50_000):
        upload.target.write(data[start : start + 50_000])
    assert _blobs(container) == [] and storage.stat("part-0.parquet") is None
    upload.target.close()
    assert _blobs(container) == []  # closed by the writer, not yet published
    upload.publish()
    assert _blobs(container) == ["out/part-0.parquet"]
    assert container.download_blob("out/part-0.parquet").readall() == data
    dropped = storage.upload("part-0.parquet")
    dropped.target.write(os.urandom(200 << 10))
    dropped.discard()
    assert container.download_blob("out/part-0.parquet").readall() == data  # untouched
    gone = storage.upload("part-1.parquet")
    gone.target.write(os.urandom(200 << 10))
    storage.discard_temporaries()  # what a run does on its way out
    assert _blobs(container) == ["out/part-0.parquet"] and storage.stat("part-1.parquet") is None


def test_ranged_reads_and_a_missing_container_is_one_line(container, azurite):
    storage = _storage(container)
    data = bytes(range(256)) * 1024
    storage.put("blob.bin", data)
    assert storage.read_ranges("blob.bin", [(0, 4), (1000, 0), (5000, 10)]) == [
        data[:4], b"", data[5000:5010]
    ]  # fmt: skip
    with storage.open("blob.bin") as handle:
        handle.seek(-10, io.SEEK_END)
        assert handle.read() == data[-10:]
    from etl.errors import ConfigError
    from etl.storage import open_storage

    with pytest.raises(ConfigError, match="does not exist"):
        open_storage("az://no-such-container/out").check()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _corpus(container, tmp_path, rows: int = 30) -> str:
    for i in range(SHARDS):
        path = write_shard(
            tmp_path / "in" / f"p{i}.parquet",
            tiny_texts(rows, seed=i),
            ids=range(i * rows, (i + 1) * rows),
        )
        container.upload_blob(f"corpus/p{i}.parquet", path.read_bytes())
    return f"az://{container.container_name}/corpus/"


def _table(container, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(container.download_blob(key).readall()))


def _report(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def job(container, tmp_path, tiny_model):
    """Three shards from az:// to az:// by two worker processes, and the same run locally."""
    uri = _corpus(container, tmp_path)
    out = f"az://{container.container_name}/vectors"
    common = ["--model", str(tiny_model), "--normalize", "--no-progress"]
    remote = _cli("run", uri, "-o", out, "--workers", "2", "--threads", "1", *common)
    assert remote.returncode == 0, remote.stderr
    local = _cli("run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *common)
    assert local.returncode == 0, local.stderr
    return out, _report(remote), common


def test_a_job_with_two_workers_writes_every_row_once_as_a_local_run_does(job, container, tmp_path):
    out, summary, common = job
    assert summary["shards_done"] == SHARDS
    ids = []
    for i in range(SHARDS):
        remote = _table(container, f"vectors/p{i}.parquet")
        assert remote.equals(pq.read_table(tmp_path / "out" / f"p{i}.parquet"), check_metadata=True)
        ids += remote.column("id").to_pylist()
    assert sorted(ids) == list(range(SHARDS * 30))  # every row exactly once
    assert not _blobs(container, "vectors/_embed_etl/claims/")  # every claim released
    again = _cli("run", f"az://{container.container_name}/corpus/", "-o", out, *common)
    assert again.returncode == 0, again.stderr
    assert _report(again)["shards_skipped"] == SHARDS  # a rerun does nothing


def test_status_on_az_passes_and_sees_a_failed_and_a_deleted_shard(job, container):
    out = job[0]
    good = _cli("status", "-o", out, "--json")
    assert good.returncode == 0, good.stderr
    report = _report(good)
    assert (report["done"], report["failed"], report["pending"]) == (SHARDS, 0, 0)
    # Planted: one output deleted, one shard's record turned into a failure.
    container.delete_blob("vectors/p0.parquet")
    key = "vectors/_embed_etl/shards/p1.parquet.json"
    record = json.loads(container.download_blob(key).readall())
    record.update(status="failed", error="planted")
    container.upload_blob(key, json.dumps(record).encode(), overwrite=True)
    for marker in _blobs(container, "vectors/_embed_etl/done/p1"):
        container.delete_blob(marker)
    bad = _cli("status", "-o", out, "--json")
    report = _report(bad)
    states = {s["input"]: s["status"] for s in report["shards"]}
    assert states == {"p0.parquet": "pending", "p1.parquet": "failed", "p2.parquet": "done"}
    assert report["failed_shards"] == [{"input": "p1.parquet", "error": "planted"}]
    assert bad.returncode != 0


def test_verify_on_az_passes_and_finds_a_planted_fault(job, container):
    out = job[0]
    good = _cli("verify", "-o", out, "--json")
    assert good.returncode == 0, good.stderr
    report = _report(good)
    assert report["status"] == "ok" and report["shards"] == SHARDS and report["rows"] == 90
    # Planted: a row missing from one output, its metadata kept.
    table = _table(container, "vectors/p2.parquet")
    container.upload_blob("vectors/p2.parquet", without_row(table, 10), overwrite=True)
    bad = _cli("verify", "-o", out, "--json")
    assert bad.returncode == 3, bad.stderr
    report = _report(bad)
    assert [p["input"] for p in report["problems"]] == ["p2.parquet"]
    assert any("rows: input 30, output 29" in p for p in report["problems"][0]["problems"])


def test_reader_processes_are_refused_on_az_in_one_line(container, tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "a.parquet", tiny_texts(3))
    out = f"az://{container.container_name}/v"
    result = _cli("run", str(tmp_path / "in"), "-o", out, "--model", str(tiny_model),
                  "--num-workers", "2")  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("embed-etl: error")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and "--num-workers 2" in errors[0] and "--num-workers 0" in errors[0]
    assert _blobs(container) == []


def test_gs_keeps_its_refusal_of_workers_and_az_spellings_share_one_backend():
    """No GCS emulator here honours preconditions (see etl/storage/blob.py): gs:// stays
    without claims between processes until one does."""
    from etl.storage import fork_safe, open_storage
    from etl.storage.blob import BlobStorage

    for uri in ("az://c/p", "abfs://c/p", "abfss://c@acct.dfs.core.windows.net/p", "gs://b/p"):
        storage = open_storage(uri)
        assert isinstance(storage, BlobStorage) and storage.uri("k") == f"{uri}/k"
        assert storage.conditional is not uri.startswith("gs://")
        assert not fork_safe(("/local/in", uri))
    assert fork_safe(("/local/in", "s3://b/p", "memory://x"))


def test_a_shards_plan_facts_cost_ranged_gets_only(container, tmp_path, tiny_model, monkeypatch):
    """As on S3: the plan reads a pending shard's footer and an existing output's footer by
    ranged GETs of at most 128 KiB each object, never a whole object of MBs."""
    from etl.plan import plan_job
    from tests.conftest import job_config, run_ok
    from tests.test_s3_state import RecordingProxy

    path = tmp_path / "big.parquet"
    texts = [f"{t} {i} " * 8 for i, t in enumerate(tiny_texts(20_000))]
    pq.write_table(pa.table({"id": range(len(texts)), "text": texts}), path, row_group_size=4096)
    container.upload_blob("corpus/big.parquet", path.read_bytes())
    name = container.container_name
    uri, out = f"az://{name}/corpus/big.parquet", f"az://{name}/vectors"
    run_ok(uri, out, tiny_model)
    for prefix in ("vectors/_embed_etl/shards/", "vectors/_embed_etl/done/"):
        for key in _blobs(container, prefix):
            container.delete_blob(key)  # the plan must read the output's footer
    sizes = {
        f"{ACCOUNT}/{name}/{key}": container.get_blob_client(key).get_blob_properties().size
        for key in ("corpus/big.parquet", "vectors/big.parquet")
    }
    assert min(sizes.values()) > 1 << 20
    with RecordingProxy(os.environ["AZURITE_BLOB_STORAGE_URL"]) as proxy:
        monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", proxy.url)
        plan = plan_job(job_config(uri, out, tiny_model))
    assert [s.rel_name for s in plan.pending] == ["big.parquet"] and plan.total_rows == 20_000
    for key, size in sizes.items():
        gets = [r for r in proxy.requests if r.method == "GET" and r.key == key]
        assert gets and all(r.range for r in gets), (key, proxy.requests)
        read = sum(r.body_bytes for r in gets)
        print(f"{key}: {len(gets)} ranged GETs, {read:,} of {size:,} bytes ({read / size:.2%})")
        assert read <= 1 << 17 and read < 0.1 * size, (key, read, size)


def test_sigkill_mid_shard_then_a_rerun_is_exactly_once_with_no_strays(
    container, tmp_path, tiny_model
):

    from tests.conftest import kill_when, start_job

    rows = 2000
    uri = _corpus(container, tmp_path, rows=rows)
    out = f"az://{container.container_name}/vectors"
    args = ["run", uri, "-o", out, "--model", str(tiny_model), "--batch-size", "4", "--no-progress"]
    env = {**os.environ, "EMBED_ETL_PART_SIZE": str(64 << 10)}  # outputs go up in blocks
    proc = start_job(
        [sys.executable, "-m", "jobs.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=False,
    )
    claimed = lambda: bool(_blobs(container, "vectors/_embed_etl/claims/"))  # noqa: E731
    kill_when(proc, claimed, "a shard claimed", poll=0.01)
    rerun = _cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    summary = _report(rerun)
    assert summary["shards_done"] + summary["shards_skipped"] == SHARDS
    ids = [
        i
        for k in range(SHARDS)
        for i in _table(container, f"vectors/p{k}.parquet").column("id").to_pylist()
    ]
    assert sorted(ids) == list(range(SHARDS * rows))  # every row exactly once
    strays = [
        k
        for k in _blobs(container, "vectors/")
        if not k.startswith(("vectors/_embed_etl/shards/", "vectors/_embed_etl/done/"))
        and k not in ("vectors/_embed_etl/job.json", "vectors/_embed_etl/vectors/store.json")
        and not (k.startswith("vectors/_embed_etl/vectors/segments/") and k.endswith(".seg"))
        and not k.startswith("vectors/_embed_etl/vectors/log/")
        and k != "vectors/_embed_etl/vectors/checkpoint.json"
        and not (k.startswith("vectors/p") and k.endswith(".parquet"))
    ]
    assert strays == []  # no claim, no temporary object
