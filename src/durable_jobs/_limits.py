"""The fixed and configurable bounds of the data that enters storage."""

from typing import Final

import attrs

from ._errors import InvalidDefinitionError


INT_MIN: Final = -(2**63)
"""The smallest integer durable-jobs stores (a signed 64-bit integer), on every backend."""
INT_MAX: Final = 2**63 - 1
"""The largest integer durable-jobs stores (a signed 64-bit integer), on every backend."""
PRIORITY_MIN: Final = -(2**31)
"""The lowest worker-pool priority (a signed 32-bit integer, every backend's column)."""
PRIORITY_MAX: Final = 2**31 - 1
"""The highest worker-pool priority (a signed 32-bit integer, every backend's column)."""
ID_MAX_BYTES: Final = 512
"""The longest id, event id or partition key, in UTF-8 bytes (database index entries are
bounded: PostgreSQL refuses an index row of more than about 2,700 bytes)."""
PREVIEW_CHARS: Final = 80
"""The longest preview of a value that an error message or a log line shows."""
MAX_DEPTH_LIMIT: Final = 256
"""The highest `DataLimits.max_depth` accepted (deeper values strain Python's recursion)."""


def _positive(_instance: object, attribute: "attrs.Attribute[int]", value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{attribute.name}: expected an integer >= 1, got {value!r}"
        raise InvalidDefinitionError(msg)


def _depth(instance: object, attribute: "attrs.Attribute[int]", value: object) -> None:
    _positive(instance, attribute, value)
    if isinstance(value, int) and value > MAX_DEPTH_LIMIT:
        msg = f"{attribute.name}: at most {MAX_DEPTH_LIMIT}, got {value!r}"
        raise InvalidDefinitionError(msg)


@attrs.frozen(kw_only=True)
class DataLimits:
    """
    How large an event or a state may be when it enters storage.

    Every event a client sends and every state a callback produces is checked against
    these limits before anything is written; a value over a limit is refused with
    `ValidationError` (a state produced on a worker is a defect of that run).

    Args:
        max_bytes: the most UTF-8 bytes of one value's compact JSON, and of the JSON text
            given to `add_json`, `send_json` or `enqueue_json` (default 1 MiB).
        max_depth: the deepest nesting of lists and objects in one value (default 64,
            at most 256).
    """

    max_bytes: int = attrs.field(default=1_048_576, validator=_positive)
    max_depth: int = attrs.field(default=64, validator=_depth)
