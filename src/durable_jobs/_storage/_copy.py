"""Deep copies of stored values, so callers never share mutable JSON with a backend."""

import attrs

from .._types import JsonValue
from ._interface import DeadLetter, InstanceRecord, QueueItem


def copy_json(value: JsonValue) -> JsonValue:
    """A copy of `value` that shares no mutable container with it."""
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    if isinstance(value, dict):
        return {name: copy_json(item) for name, item in value.items()}
    return value


def copy_record(record: InstanceRecord) -> InstanceRecord:
    return attrs.evolve(record, state=copy_json(record.state), meta=copy_json(record.meta))


def copy_letter(letter: DeadLetter) -> DeadLetter:
    return attrs.evolve(letter, state=copy_json(letter.state), event=copy_json(letter.event))


def copy_item(item: QueueItem) -> QueueItem:
    return attrs.evolve(item, event=copy_json(item.event))
