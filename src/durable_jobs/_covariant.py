"""
Covariant type parameters for read-only views (`ErrorContext`).

A module of its own because a type variable's variance belongs to the variable, and the
documented letter `S` is invariant in `_contexts.py` (its contexts can `set_state`).
"""

from typing_extensions import TypeVar


S = TypeVar("S", covariant=True)
"""A state type that is only read, never set."""
