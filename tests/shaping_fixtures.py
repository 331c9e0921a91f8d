"""The ``shaping_proxy`` fixture: a :class:`ShapingProxy` in front of this session's moto server.

Import it into a test module with ``from shaping_fixtures import shaping_proxy``. The proxy
starts unshaped (no latency, no caps): a test calls ``shape(latency=..., rate=..., total_rate=...)``
before its traffic and reads ``stats()`` and ``exchanges`` after it. The
moto server behind it has been reset for the test by ``s3_endpoint``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from shaping_proxy import ShapingProxy

__all__ = ["shaping_proxy"]


@pytest.fixture
def shaping_proxy(s3_endpoint: str) -> Iterator[ShapingProxy]:
    with ShapingProxy(s3_endpoint) as proxy:
        yield proxy
