"""The ``fault_proxy`` fixture: a :class:`FaultProxy` in front of this session's moto server.

Import it into a test module with ``from fault_fixtures import fault_proxy``. The proxy starts
with faults switched off (rates 0) and is stopped when the test ends; the moto server behind
it has been reset for the test by ``s3_endpoint``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_proxy import FaultProxy

__all__ = ["fault_proxy"]


@pytest.fixture
def fault_proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(s3_endpoint, seed=1) as proxy:
        yield proxy
