"""The stores a run consults and adds to, resolved and checked before anything runs.

The job's own store is consulted first and receives every vector the run computes: by default
under its output (_embed_etl/vectors/), or the store --store names (one store any number of
jobs share). Each --reuse location is consulted after it, never written: another job's output
(its own store) or a store. A store of another recipe is refused, naming what differs; the
job's own default store of another recipe belongs to results the job is replacing, and is
emptied. A store's recipe is believed only where it is the sha256 of the identity its
store.json describes (every segment's trailer repeats it, etl.reuse.store). A --reuse store
made by another version of the vector code, or of the store's format, is not used: the job says
so once, and in its summary, and embeds those texts.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from etl.config import JobConfig
from etl.errors import ConfigError, OutputConflictError
from etl.redact import redact
from etl.reuse.lookup import Lookup
from etl.reuse.records import Layout
from etl.reuse.store import FORMAT as STORE_FORMAT
from etl.reuse.store import StoreTarget, VectorStore, verified_recipe
from etl.spec import OutputSpec
from etl.state.job_record import describe_difference
from etl.state.keys import JOB, VECTORS
from etl.storable import unstorable
from etl.storage import Storage, open_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReusePlan:
    """Where a run finds vectors and keeps the ones it computes. Picklable."""

    own: VectorStore  # consulted first, and added to
    sources: tuple[VectorStore, ...]  # --reuse: consulted after, in order, never written
    run: str  # this run's token: what its workers stored is "job", the rest "earlier"
    identity: dict[str, Any] = field(compare=False)  # the recipe, for store.json
    clear_own: bool = False  # the own default store holds another recipe: empty it first
    unused: tuple[str, ...] = ()  # --reuse stores whose vectors are not used, and why

    @property
    def stores(self) -> tuple[VectorStore, ...]:
        return (self.own, *self.sources)

    def lookup(self) -> Lookup:
        return Lookup(self.stores, self.run)

    def target(self, output: str) -> StoreTarget:
        """Where a worker of this run adds its vectors: the own store, under names of its own."""
        return StoreTarget(self.own, self.run, output, uuid.uuid4().hex[:12])


def store_layout(spec: OutputSpec) -> Layout:
    """The record of a store for this spec: every pooled column, before truncation."""
    return Layout(tuple((c.name, c.dim) for c in spec.columns if not c.tokens))


def plan_reuse(cfg: JobConfig, spec: OutputSpec, storage: Storage) -> ReusePlan | None:
    """The run's stores, or None when it embeds every row (--no-reuse, token vectors)."""
    if cfg.no_reuse:
        return None
    refused = unstorable(tokens=spec.has_tokens, sparse=spec.sparse, late=spec.chunking == "late")
    if refused is not None:
        given = "--store" if cfg.store is not None else "--reuse" if cfg.reuse else None
        if given is not None:
            raise ConfigError(
                f"{given}: {refused.what} are not kept in a vector store ({refused.why}); drop "
                f"{given}, every row is embedded"
            )
        log.info("%s: every row is embedded; they are not kept in a vector store", refused.what)
        return None
    layout, recipe = store_layout(spec), spec.recipe_fingerprint
    identity = spec.recipe_identity()
    default = cfg.store is None
    root = storage.child(VECTORS) if default else _open("--store", cfg.store)
    own = VectorStore(root, layout, recipe)
    clear = False
    described = own.description()
    if described is not None and _recipe(described) != recipe:
        if default:
            clear = True  # the job record check let these results be replaced
        else:
            raise ConfigError(
                f"--store {cfg.store}: {_unlike(described, identity)}; give another --store"
            )
    sources, unused = [], []
    for uri in dict.fromkeys(cfg.reuse):
        source = _source(uri, layout, recipe, identity)
        if isinstance(source, str):
            log.warning("--reuse %s: its vectors are not used: %s", redact(uri), source)
            unused.append(f"{redact(uri)}: {source}")
        elif source.uri != own.uri and source.uri not in (s.uri for s in sources):
            sources.append(source)
    run = uuid.uuid4().hex[:16]
    return ReusePlan(own, tuple(sources), run, identity, clear, tuple(unused))


def prepare_stores(reuse: ReusePlan) -> None:
    """Create the own store's store.json (emptying an own store of another recipe first)."""
    described = reuse.own.description() if reuse.clear_own else None
    if described is not None and _recipe(described) != reuse.own.recipe:
        # Still of the other options (a part of this job started at once may have made it
        # over already: then it stays).
        log.info("%s: emptying a vector store of other options", reuse.own.uri)
        reuse.own.clear()
    found = reuse.own.create(reuse.identity)
    if _recipe(found) != reuse.own.recipe:
        raise OutputConflictError(
            f"{reuse.own.uri}: another job just made it {_unlike(found, reuse.identity)}"
        )


def locate_store(option: str, uri: str, any_format: bool = False) -> tuple[Storage, dict[str, Any]]:
    """The store at ``uri`` (an embed-etl output's own, or a store) and its store.json; a
    ConfigError naming ``option`` and what is missing or (unless ``any_format``) of another
    format."""
    storage = _open(option, uri)
    is_output = storage.exists(JOB)
    if is_output:
        storage = storage.child(VECTORS)
    described = VectorStore(storage, Layout(()), "").description()
    if described is None:
        why = (
            "that job kept no vectors (it ran with --no-reuse, with --store elsewhere, or "
            "before embed-etl kept any)"
            if is_output
            else "neither an embed-etl output nor a vector store (no store.json)"
        )
        raise ConfigError(f"{option} {uri}: {why}")
    if described.get("format") != STORE_FORMAT and not any_format:
        raise ConfigError(
            f"{option} {uri}: {_old_format(described)} (rerun that job, or give another location)"
        )
    return storage, described


def open_store(option: str, uri: str) -> VectorStore:
    """The store at ``uri`` as its store.json describes it (the store commands)."""
    storage, described = locate_store(option, uri)
    try:
        layout = Layout(tuple((str(name), int(dim)) for name, dim in described["columns"]))
        return VectorStore(storage, layout, str(described["recipe"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{option} {uri}: unreadable store.json ({exc})") from exc


def _source(uri: str, layout: Layout, recipe: str, identity: dict[str, Any]) -> VectorStore | str:
    """A --reuse location (an embed-etl output's own store, or a store), or why its vectors
    are not used: another version of the vector code or of the store's format, or a store.json
    that does not hold together. A store of another model or options is the user's mistake: a
    ConfigError."""
    storage, described = locate_store("--reuse", uri, any_format=True)
    if _recipe(described) == recipe:
        return VectorStore(storage, layout, recipe)
    found = described.get("identity")
    if described.get("format") != STORE_FORMAT or not verified_recipe(described):
        return _unlike(described, identity)
    if isinstance(found, dict) and {**found, "code": None} == {**identity, "code": None}:
        code = describe_difference(found.get("code") or {}, identity["code"], "code.")
        return f"they were made by another version of the vector code ({code})"
    raise ConfigError(
        f"--reuse {uri}: {_unlike(described, identity)}; reuse only vectors of the same model, "
        "columns, lengths, prompt and precision"
    )


def _recipe(described: dict[str, Any]) -> str | None:
    """The recipe a store.json declares, if it is of this format and the digest of the
    identity it describes."""
    if described.get("format") != STORE_FORMAT or not verified_recipe(described):
        return None
    return described.get("recipe")


def _unlike(described: dict[str, Any], identity: dict[str, Any]) -> str:
    """What a store is, where it is not of ``identity``'s recipe."""
    if described.get("format") != STORE_FORMAT:
        return _old_format(described)
    if not verified_recipe(described):
        return (
            "a vector store whose store.json declares a recipe that is not the digest of the "
            "identity it describes (edited or damaged)"
        )
    difference = describe_difference(described.get("identity") or {}, identity)
    return f"a vector store of another recipe ({difference})"


def _old_format(described: dict[str, Any]) -> str:
    return (
        f"a vector store of format {described.get('format')}, written by another embed-etl; "
        f"this one reads format {STORE_FORMAT}"
    )


def _open(option: str, uri: str) -> Storage:
    try:
        storage = open_storage(uri)
        storage.check()
    except ConfigError as exc:
        raise ConfigError(f"{option} {uri}: {exc}") from exc
    return storage
