"""Which programs XLA compiles inside a block, read from ``jax.log_compiles``'s log records.

The claim "one compiled program serves every parameter value" is about the library's own jitted
programs; their compilations are logged by name, so a test can count them without reaching into
the library's private caches.
"""

import contextlib
import logging
import re

import jax

_COMPILING = re.compile(r"Compiling (\S+)")


@contextlib.contextmanager
def compilations(caplog):
    """Yields a list that holds, once the block exits, the names of the programs it compiled."""
    names: list = []
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        start = len(caplog.records)
        yield names
    for record in caplog.records[start:]:
        match = _COMPILING.match(record.getMessage())
        if match:
            names.append(match.group(1))
