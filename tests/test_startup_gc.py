"""`bot.ops.startup_gc`: the collector off while start-up builds, what it built frozen after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bot.ops.startup_gc import collector_paused


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.unfreeze()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_collector_is_off_inside_and_on_again_with_what_was_built_frozen() -> None:
    gc.enable()
    frozen_before = gc.get_freeze_count()
    with collector_paused():
        assert not gc.isenabled()
        built = [[index] for index in range(10_000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(built)
    scanned = {id(item) for item in gc.get_objects()}  # the collector's generations, not the frozen one
    assert not any(id(item) in scanned for item in built)


def test_a_collector_that_was_off_stays_off_and_an_error_still_freezes() -> None:
    gc.disable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("start-up failed")
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0
