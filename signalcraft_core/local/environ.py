"""os.environ changed for a block and put back afterwards: the local tools run handlers in this process."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def patched_environ(updates: Mapping[str, str], hidden: Iterable[str] = ()) -> Iterator[None]:
    """`updates` set and the `hidden` names removed for the block; every previous value comes back after it.

    A handler reads its configuration from the environment, as in Lambda; an in-process invoke (or
    the embedded server's key) must not leak into the next one, an exception included.
    """
    hidden = [k for k in hidden if k not in updates]
    saved = {k: os.environ.get(k) for k in [*updates, *hidden]}
    os.environ.update(updates)
    for k in hidden:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
