"""An s3:// URI as pyarrow writes one: s3://ACCESS_KEY:SECRET_KEY@bucket/prefix?region=...

The credentials and options go to boto3's client and nowhere else (etl.redact keeps them out of
every record and message); the environment's AWS_* settings apply where the URI has none.
"""

from __future__ import annotations

from etl.errors import ConfigError
from etl.storage.location import Location

# What an s3:// URI's query may set (pyarrow's names), as boto3 calls it.
URI_OPTIONS = {
    "region": "region_name",
    "endpoint_override": "endpoint_url",
    "session_token": "aws_session_token",
}


def parse_s3_uri(uri: str) -> tuple[str, str, dict[str, str]]:
    """(bucket, prefix, boto3 client options) of an s3:// URI, or a ConfigError naming it
    (redacted) and what was expected."""
    where = Location.parse(uri)
    bucket, prefix, userinfo, query = where.host, where.path[1:], where.userinfo, where.options
    if not bucket:
        raise ConfigError(f"{where.redacted}: expected s3://bucket/prefix")
    unknown = sorted(set(query) - set(URI_OPTIONS))
    if unknown:
        raise ConfigError(
            f"{where.redacted}: {unknown[0]!r} in its query is not an s3:// option; expected "
            f"{', '.join(URI_OPTIONS)} (or the AWS_* environment variables)"
        )
    options = {URI_OPTIONS[k]: v for k, v in query.items()}
    if userinfo:
        key, colon, secret = userinfo.partition(":")
        if not colon or not key or not secret:
            raise ConfigError(
                f"{where.redacted}: expected s3://ACCESS_KEY:SECRET_KEY@bucket/prefix"
            )
        options.update(aws_access_key_id=key, aws_secret_access_key=secret)
    return bucket, prefix, options
