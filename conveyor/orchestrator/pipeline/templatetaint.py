"""Values a template derives from secrets, so that they are masked like the secrets.

A run's log masks its secrets' values; a template could print ``{{ secrets.TOKEN |
upper }}``, ``b64encode``-like filters or a slice of it, which the mask would not know.
While a :class:`Taint` is active (:func:`tracking`), the engine's hooks (calls, filters,
operators, lookups, loops and every printed value) look at what went in: when an
argument holds a secret, or a value derived from one, the result is derived too and
its text is kept in :attr:`Taint.derived`. The caller adds those to the run's mask.

Derived values shorter than ``min_length`` are not masked (one character of a secret
would mask every such character in a log), nor are more than ``MAX_DERIVED`` of them; but
a render that prints such pieces (``{% for c in secrets.TOKEN %}{{ c }}-{% endfor %}``)
is derived as a whole. Text headed for a shell is the exception: each printed piece
becomes a variable of its own, and a shell can rearrange a secret's characters anyway.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

#: Shorter values would turn every log into asterisks; GitHub and GitLab draw the same line.
MIN_SECRET_LENGTH = 3
#: Derived values kept per scope, and the longest one kept.
MAX_DERIVED = 1000
MAX_DERIVED_LENGTH = 65_536
#: How deep into lists and mappings a value is looked at, and how many items.
_DEPTH, _ITEMS = 4, 1000


class Taint:
    """The secrets of one scope of renders, and what the templates derived from them."""

    def __init__(self, secrets: Iterable[str], min_length: int = MIN_SECRET_LENGTH) -> None:
        self.min_length = min_length
        self.seeds = sorted({s for s in secrets if len(s) >= min_length}, key=len, reverse=True)
        #: Text derived from the secrets, long enough to mask.
        self.derived: set[str] = set()
        #: Derived pieces too short to mask (a character of a secret): printing one
        #: makes the whole render derived.
        self.fragments: set[str] = set()
        #: How many printed values held a secret or something derived.
        self.printed_count = 0
        #: How many of them were too short to mask on their own (a piece of a secret).
        self.pieces_printed = 0
        #: Lists, mappings and iterators derived from a secret, by id (kept alive, so
        #: that no other object takes the id): ``secret | list`` holds only characters.
        self._objects: dict[int, Any] = {}

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Track these secrets too."""
        more = {s for s in secrets if len(s) >= self.min_length}
        self.seeds = sorted({*self.seeds, *more}, key=len, reverse=True)

    def printed(self, value: Any, text: str) -> bool:
        """True (and counted) when a printed value holds a secret or derived piece."""
        held = text in self.fragments or self.holds(value) or self.holds(text)
        self.printed_count += held
        self.pieces_printed += held and len(text.strip()) < self.min_length
        return held

    def holds(self, value: Any, depth: int = _DEPTH) -> bool:
        """True when ``value`` (or something inside it) holds a secret or a derived value."""
        if id(value) in self._objects and self._objects[id(value)] is value:
            return True
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", "replace")
        if isinstance(value, str):
            return any(s in value for s in self.seeds) or any(d in value for d in self.derived)
        return depth > 0 and any(self.holds(v, depth - 1) for v in _inside(value))

    def any_holds(self, *values: Any) -> bool:
        """True when any of ``values`` holds a secret or a derived value."""
        return any(self.holds(v) for v in values)

    def derive(self, result: Any, *, fragment: bool = False, depth: int = _DEPTH) -> Any:
        """Keep the text of ``result`` (and of strings inside it) as derived; returns it.

        ``fragment``: a short one is still noted as a piece of a secret."""
        self._derive(result, fragment, depth)
        return result

    def _derive(self, result: Any, fragment: bool, depth: int) -> None:
        if isinstance(result, bytes | bytearray):
            result = bytes(result).decode("utf-8", "replace")
        if isinstance(result, str):
            self._keep(result, fragment)
            return
        if result is None or isinstance(result, bool | int | float):
            return
        if len(self._objects) < MAX_DERIVED:
            self._objects[id(result)] = result
        if depth > 0 and isinstance(result, Mapping | list | tuple | set | frozenset):
            for item in _inside(result):  # never an iterator: that would use it up
                self._derive(item, fragment or not isinstance(result, Mapping), depth - 1)

    def _keep(self, text: str, fragment: bool) -> None:
        if len(text) < self.min_length:
            if fragment and text.strip() and len(self.fragments) < MAX_DERIVED:
                self.fragments.add(text)
        elif len(text) <= MAX_DERIVED_LENGTH and len(self.derived) < MAX_DERIVED:
            self.derived.add(text)

    def follow(self, result: Any, *inputs: Any) -> Any:
        """``result`` of an operation on ``inputs``: derived when an input was."""
        if self.seeds and (self.any_holds(*inputs) or any(self._piece(v) for v in inputs)):
            self.derive(result, fragment=True)
        return result

    def _piece(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.fragments


def _inside(value: Any) -> Iterator[Any]:
    """The keys and values of a mapping, the items of a list, tuple or set (a bounded
    number of them); nothing for anything else."""
    if isinstance(value, Mapping):
        for key, item in itertools.islice(value.items(), _ITEMS):
            yield key
            yield item
    elif isinstance(value, list | tuple | set | frozenset):
        yield from itertools.islice(value, _ITEMS)


_TAINT: ContextVar[Taint | None] = ContextVar("conveyor_template_taint", default=None)


def current() -> Taint | None:
    """The taint of the renders in progress, if secrets are being tracked."""
    taint = _TAINT.get()
    return taint if taint is not None and taint.seeds else None


def follow(result: Any, *inputs: Any) -> Any:
    """Mark ``result`` derived when one of ``inputs`` holds a secret; returns ``result``."""
    taint = _TAINT.get()
    if taint is not None and taint.seeds:
        taint.follow(result, *inputs)
    return result


@contextlib.contextmanager
def tracking(secrets: Iterable[str], min_length: int = MIN_SECRET_LENGTH) -> Iterator[Taint]:
    """Track what renders inside derive from ``secrets``; an enclosing scope is kept."""
    outer = _TAINT.get()
    if outer is not None:
        outer.add_secrets(secrets)
        yield outer
        return
    taint = Taint(secrets, min_length)
    token = _TAINT.set(taint)
    try:
        yield taint
    finally:
        _TAINT.reset(token)
