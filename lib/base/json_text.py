"""JSON text that comes from outside FaceLab (a pasted spec or pipeline, an uploaded meta.json),
parsed so that any problem with it is a ValueError saying what is wrong.

``json.loads`` alone lets other exceptions through: it recurses once per level of nesting, so
``[[[[...]]]]`` a few thousand levels deep raises RecursionError, and a value nested just below
that limit makes every later walk over it (repr, deepcopy, dataclasses.asdict, json.dumps) fail
the same way. FaceLab's own files nest a few levels, so anything deeper than ``MAX_DEPTH`` is
refused before any of that code sees it.
"""
from __future__ import annotations

import json

MAX_DEPTH = 32  # levels of [ ] and { }; a meta.json holding a spec and a pipeline needs about 6


def parse_json(text: str | bytes, what: str):
    """The value of JSON ``text``; ValueError starting with ``what`` (e.g. "model spec") when the
    text is not JSON, holds a number Python will not convert, or nests deeper than ``MAX_DEPTH``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise _too_deep(what) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} is not valid JSON: {err}") from None
    except ValueError as err:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise ValueError(f"{what} is not valid JSON: a number is far too long ({err})") from None
    if nesting_depth(value, stop_after=MAX_DEPTH) > MAX_DEPTH:
        raise _too_deep(what)
    return value


def nesting_depth(value, stop_after: int | None = None) -> int:
    """Levels of lists and dicts in ``value`` (0 for a number or text), counted without recursion;
    counting stops once it passes ``stop_after``."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if not isinstance(item, (list, dict)):
            continue
        deepest = max(deepest, depth)
        if stop_after is not None and deepest > stop_after:
            break
        pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _too_deep(what: str) -> ValueError:
    return ValueError(f"{what} is nested too deeply: more than {MAX_DEPTH} levels of [ ] or {{ }}. "
                      "FaceLab's files nest a few levels; check that the text is the file you meant")
