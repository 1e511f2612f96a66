"""A path or URI parsed once into its parts: scheme, the store's root, the path in it, the query.

Every caller that needs a part of a location (the store to open, a key, the options a URI's query
gives the store, whether it is a glob, a name relative to a prefix) asks a Location instead of
splitting the text again. The text round-trips: ``str(Location.parse(text)) == text``, so a
listed file keeps the credentials and options its store was opened with. What leaves the process
goes through ``redacted``, which etl.redact decides.

A query is a ``?`` followed by a ``key=value``; a ``?`` in a glob (``p?.parquet``) stays in the
path. The authority keeps any userinfo (``KEY:SECRET@bucket``, ``container@account``): it is what
the store opens, and only the store's own parser (s3_uri) reads credentials from it.
"""

from __future__ import annotations

import glob
import posixpath
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import parse_qsl, unquote

from etl.redact import redact


def is_uri(location: str | Path | Location) -> bool:
    """s3://bucket/x, memory://x, gs://... (a Windows drive letter is not a scheme)."""
    if isinstance(location, Location):
        return location.is_uri
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


@dataclass(frozen=True)
class Location:
    """One input or output location: a local path (scheme '') or a URI, in parts."""

    scheme: str  # as written ('s3', 'az', 'memory', ...); '' for a local path
    authority: str  # bucket, container or host, userinfo included; '' for a local path
    path: str  # a URI's path after the authority ('/prefix/key', or ''); a local path as given
    query: str = ""  # the store's options with their '?' ('?region=eu-west-1'), or ''

    @classmethod
    def parse(cls, location: str | Path | Location) -> Location:
        """The parts of a path or URI (a Location is returned as it is)."""
        if isinstance(location, Location):
            return location
        text = str(location)
        if not is_uri(text):
            return cls("", "", text)
        scheme, rest = text.split("://", 1)
        head, mark, query = rest.partition("?")
        if not mark or "=" not in query:
            head, query = rest, ""  # a '?' with no option after it is a glob's wildcard
        else:
            query = f"?{query}"
        authority, slash, path = head.partition("/")
        return cls(scheme, authority, slash + path, query)

    def __str__(self) -> str:
        if not self.scheme:
            return self.path
        return f"{self.scheme}://{self.authority}{self.path}{self.query}"

    @property
    def is_uri(self) -> bool:
        return bool(self.scheme)

    @property
    def kind(self) -> str:
        """The scheme as a backend is chosen by: 's3', 'az', ...; '' for a local path."""
        return self.scheme.lower()

    @property
    def redacted(self) -> str:
        """The location as messages and records may name it: no credentials, no options."""
        return redact(str(self))

    @property
    def key(self) -> str:
        """A URI's object key or folder prefix inside its store, without edge slashes."""
        return self.path.strip("/")

    @property
    def userinfo(self) -> str:
        """The credentials written before the bucket (``KEY:SECRET``), unquoted, or ''."""
        userinfo, at, _ = self.authority.rpartition("@")
        return unquote(userinfo) if at else ""

    @property
    def host(self) -> str:
        """The authority without userinfo: the bucket, container or host."""
        return self.authority.rpartition("@")[2]

    @property
    def options(self) -> dict[str, str]:
        """The query's options, as the store's client is given them."""
        return dict(parse_qsl(self.query[1:], keep_blank_values=True))

    @property
    def root(self) -> Location:
        """The store itself (scheme://bucket, options kept): what a storage is opened on."""
        return replace(self, path="")

    @property
    def is_glob(self) -> bool:
        """Whether the location has a wildcard (a query's '?' is none)."""
        return glob.has_magic(self.host + self.path)

    @property
    def is_folder(self) -> bool:
        """Whether a URI is written as a prefix (ends with '/'), so it names no object."""
        return self.path.endswith("/")

    @property
    def name(self) -> str:
        """The last part of the key (an object's file name)."""
        return posixpath.basename(self.path.rstrip("/"))

    def child(self, key: str) -> Location:
        """The object at ``key`` in this location's store (key from the store root)."""
        return replace(self, path=f"/{key}")

    def glob_root(self) -> Location:
        """A URI glob's fixed part: the folder before its first wildcard."""
        text = self.authority + self.path
        head = text[: min((text.find(c) for c in "*?[" if c in text), default=len(text))]
        authority, slash, path = head.partition("/")
        if slash:
            return Location(self.scheme, authority, f"/{path}".rsplit("/", 1)[0], self.query)
        return Location(self.scheme, authority, "", self.query)

    def matches(self, pattern: Location) -> bool:
        """Whether this object matches a glob of its store (shell wildcards; '*' crosses '/')."""
        return fnmatchcase(self.authority + self.path.rstrip("/"), pattern.authority + pattern.path)

    def relative_to(self, root: Location) -> str:
        """The key under ``root``'s key, with empty and '.' parts dropped ('..' kept)."""
        path, base = self.path.lstrip("/"), root.key
        rel = path[len(base) :].lstrip("/") if path.startswith(base) else path
        # Keys are strings: a//b and a/./b are other objects than a/b, but would be one name.
        return "/".join(part for part in rel.split("/") if part not in ("", "."))

    @property
    def identity(self) -> str:
        """A comparable form of a URI: the scheme lower-cased, no userinfo, no query, no edge
        slashes (one object, whatever credentials or options name it)."""
        return f"{self.kind}://{(self.host + '/' + self.key).strip('/')}"
