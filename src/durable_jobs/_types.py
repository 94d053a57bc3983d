"""Shared type aliases."""

from typing import TypeAlias


JsonValue: TypeAlias = "str | int | float | bool | None | list[JsonValue] | dict[str, JsonValue]"
"""A value that survives `json.dumps`/`json.loads` unchanged: what storage holds."""
