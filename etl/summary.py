"""JobSummary: what a run did, printed by the CLI as one JSON line on stdout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from etl.contract import ShardRecord, ShardStatus, WorkerInfo

# Where a reused row's vector came from: a repeat within its shard, a store entry this run
# made (another shard or worker), one made before it (a rerun, --reuse).
REUSE_SOURCES = ("shard", "job", "earlier")


@dataclass
class JobSummary:
    """Every shard's result, the job's fingerprint and the run's wall time."""

    fingerprint: str
    shards: list[ShardRecord]
    seconds: float = 0.0
    workers: list[WorkerInfo] = field(default_factory=list)  # those that loaded the model
    worker_restarts: int = 0  # worker processes started again after one died
    stores_not_used: list[str] = field(default_factory=list)  # --reuse stores, and why

    def count(self, status: ShardStatus) -> int:
        return sum(1 for r in self.shards if r.status == status)

    @property
    def ok(self) -> bool:
        return self.count(ShardStatus.FAILED) == 0

    def to_dict(self) -> dict[str, Any]:
        done = [r for r in self.shards if r.status == ShardStatus.DONE]
        rows = sum(r.rows_in for r in done)
        reused = {s: sum(r.rows_reused.get(s, 0) for r in done) for s in REUSE_SOURCES}
        tokens = sum(r.tokens for r in done)
        padded = sum(r.padded_tokens for r in done)
        seconds = round(self.seconds, 3)
        return {
            "status": "ok" if self.ok else "failed",
            "rows": rows,
            "tokens": tokens,
            "seconds": seconds,
            "rows_per_s": round(rows / self.seconds, 1) if self.seconds > 0 else None,
            "tokens_per_s": round(tokens / self.seconds, 1) if self.seconds > 0 else None,
            "padding_ratio": round(padded / tokens, 4) if tokens else None,
            "device_seconds": round(sum(r.device_seconds for r in done), 3),
            "null_rows": sum(r.null_rows for r in done),
            "refused_rows": sum(r.refused_rows for r in done),
            "truncated_rows": sum(r.truncated_rows for r in done),
            "chunked_rows": sum(r.chunked_rows for r in done),
            "texts_embedded": sum(r.texts_embedded for r in done),
            "texts_not_fetched": sum(r.texts_not_fetched for r in done),
            "rows_reused": sum(reused.values()),
            "rows_reused_from": reused,
            "shards_done": len(done),
            "shards_failed": self.count(ShardStatus.FAILED),
            "shards_skipped": self.count(ShardStatus.SKIPPED),  # done before this run
            "shards_elsewhere": self.count(ShardStatus.ELSEWHERE),  # another process has them
            "workers": [asdict(w) for w in self.workers],
            "worker_restarts": self.worker_restarts,
            "stores_not_used": self.stores_not_used,
            "fingerprint": self.fingerprint,
            "shards": [
                {
                    "input": r.shard.rel_name,
                    "status": r.status.value,
                    "rows": r.rows_in,
                    "null_rows": r.null_rows,
                    "refused_rows": r.refused_rows,
                    **({"refused": r.refused} if r.refused else {}),
                    "truncated_rows": r.truncated_rows,
                    "chunked_rows": r.chunked_rows,
                    "texts_embedded": r.texts_embedded,
                    "rows_reused": {s: r.rows_reused.get(s, 0) for s in REUSE_SOURCES},
                    "seconds": round(r.seconds, 3),
                    "device_seconds": round(r.device_seconds, 3),
                    **({"error": r.error} if r.error else {}),
                }
                for r in self.shards
                if r.status in (ShardStatus.DONE, ShardStatus.FAILED)
            ],
        }
