"""The input gap watch: consecutive offsets, repeats after a seek back, jumps and revocation."""

from __future__ import annotations

import asyncio

import faust

from streams.gaps import INPUT_GAPS, GapWatch, watch_inputs


def _gaps(topic: str) -> float:
    return INPUT_GAPS.labels(topic)._value.get()


def test_consecutive_and_repeated_offsets_are_no_gap() -> None:
    watch = GapWatch()
    before = _gaps("t-ok")
    assert [watch.observe("t-ok", 0, o) for o in (5, 6, 7, 5, 6, 7, 8)] == [0] * 7
    assert _gaps("t-ok") == before


def test_a_jump_is_counted_and_partitions_are_apart() -> None:
    watch = GapWatch()
    before = _gaps("t-jump")
    assert watch.observe("t-jump", 0, 2) == 0
    assert watch.observe("t-jump", 1, 9) == 0
    assert watch.observe("t-jump", 0, 5) == 2  # 3 and 4 never delivered
    assert _gaps("t-jump") == before + 2


def test_a_revocation_forgets_every_partition(tmp_path) -> None:
    app = faust.App("gaps", broker="kafka://127.0.0.1:1", store="memory://", datadir=tmp_path)
    watch = watch_inputs(app)
    watch.observe("t-rev", 0, 2)

    async def revoke() -> None:
        await app.on_partitions_revoked.send(set())

    asyncio.run(revoke())
    assert watch.observe("t-rev", 0, 40) == 0  # another worker had the partition meanwhile
