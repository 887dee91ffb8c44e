"""The Date the edge writes on its own answers (RFC 9110 5.6.7, IMF-fixdate)."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from backhaul.edge.datapath import _imf_fixdate


@pytest.mark.parametrize("seconds", [0, 784111777, 951782400, 1_700_000_000, 4_102_444_799])
def test_imf_fixdate_matches_the_standard_library(seconds: int) -> None:
    assert _imf_fixdate(seconds) == formatdate(seconds, usegmt=True).encode()
