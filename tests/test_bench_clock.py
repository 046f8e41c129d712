"""The roofline's clock: a dependent-addition loop run as machine code gives a real clock."""

from __future__ import annotations

import platform

import pytest

from bench.clock import running_ghz
from bench.common import cpu_info


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the loop is x86-64 machine code")
def test_the_running_clock_is_near_the_nominal_one() -> None:
    ghz = running_ghz(2, iterations=5_000_000)
    nominal = cpu_info().mhz
    assert ghz is not None and nominal is not None
    # Boost and throttling move it, by well under a factor of two either way.
    assert nominal / 1000 / 2 < ghz < nominal / 1000 * 2
