"""Shared type aliases."""

from typing_extensions import TypeAliasType


JsonValue = TypeAliasType(
    "JsonValue", "str | int | float | bool | None | list[JsonValue] | dict[str, JsonValue]"
)
"""A value that survives `json.dumps`/`json.loads` unchanged: what storage holds."""
