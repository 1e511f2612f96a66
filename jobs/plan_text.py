"""What `embed-etl plan` prints for a person: the parts, or (--estimate) what the job will cost."""

from __future__ import annotations

from typing import Any


def parts_text(plan: dict[str, Any]) -> str:
    """A line per part of etl.plan_parts' answer: its bytes and its input files."""
    lines = []
    for part in plan["parts"]:
        names = ", ".join(part["inputs"]) or "(nothing)"
        lines.append(f"part {part['shard_index']}: {part['bytes']:,} bytes: {names}")
    return "\n".join(lines)


def estimate_text(found: dict[str, Any]) -> str:
    """etl.estimate_job's answer: rows, tokens, the stores' share, and with --calibrate, time."""
    lines = [
        f"inputs       {found['inputs']:,} shards ({found['shards_done']:,} done, "
        f"{found['shards_pending']:,} to do)",
        f"rows         {found['rows']:,} to do (from the footers)",
    ]
    if not found["rows"]:
        return "\n".join([*lines, "nothing to embed"])
    if found.get("chunk_tokens"):
        tokens = found["chunk_tokens"]
        long = f"{found['long_share']:.1%} in several passages of --chunk-tokens {tokens}"
    else:
        long = (
            f"{found['long_share']:.1%} over --max-length {found['max_length']}, "
            f"--long-text {found['long_text']}"
        )
    lines.append(
        f"tokens       {found['tokens']:,} ({found['tokens_per_row']:,} a row; "
        f"{found['sample_rows']:,} rows sampled in {found['sample_groups']} row groups; {long})"
    )
    held = found.get("stores_hold")
    if held is not None:
        lines.append(
            f"stores hold  {held['rows']:.1%} of the sampled rows, {held['tokens']:.1%} of "
            f"their tokens: {found['tokens_to_embed']:,} tokens to embed"
        )
    lines.append(f"model        {found['model']} on {found['device']}, {found['dtype']}")
    calibration = found.get("calibration")
    if calibration is None:
        lines.append("time         add --calibrate to time a sample on this machine")
        return "\n".join(lines)
    when = found["time"]
    lines += [
        f"calibrated   {calibration['rows']:,} rows, {calibration['tokens']:,} tokens in "
        f"{calibration['embedding_s']:,} s: {calibration['tokens_per_s']:,.0f} tokens/s "
        f"({calibration['rows_per_s']:,.0f} rows/s), start-up {calibration['startup_s']} s",
        f"time         {_duration(when['seconds'])} with these options "
        f"({_devices(found['device'], when['devices'])}); "
        f"{_duration(when['seconds_one_device'])} on one device, "
        f"{_duration(when['seconds_fleet'])} on {when['fleet']}",
        f"cost         {when['device_hours']:,} device-hours",
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _devices(device: str, count: int) -> str:
    if device == "cpu":
        return "this machine's CPU"
    return f"{count} device{'s' if count > 1 else ''}, {device}"
