"""Build a named component (regulariser, optimiser, metric, transform) from user options, turning
an option it does not take or a value it refuses into one ``InputError`` naming the component.

Construction sites call ``construct(cls, "regulariser 'diffusion'", weight=w, **options)`` instead of
``cls(weight=w, **options)``, so a typo in a config's options is exit 2 with a clear line instead
of a ``TypeError`` (exit 1, "internal error").
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import InputError

T = TypeVar("T")


def accepted_options(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword names ``factory`` takes, or None when it takes any (``**kwargs``) or cannot be inspected."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                      inspect.Parameter.KEYWORD_ONLY)]


def construct(factory: Callable[..., T], what: str, /, *args: Any, **options: Any) -> T:
    """``factory(*args, **options)``; InputError naming ``what`` for an unknown option or a refused value."""
    accepted = accepted_options(factory)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InputError(f"{what}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                             f"it takes {', '.join(accepted[len(args):]) or 'no options'}")
    try:
        return factory(*args, **options)
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
