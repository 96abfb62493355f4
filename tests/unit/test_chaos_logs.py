"""The chaos harness reads the workers' logs for inputs an agent jumped over."""

from __future__ import annotations

import logging

from payments.chaos import Record, check_worker_logs
from streams.gaps import GapWatch


def test_a_gap_the_watch_logs_is_a_violation(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="streams.gaps"):
        watch = GapWatch()
        watch.observe("refund_request", 0, 2)
        watch.observe("refund_request", 0, 5)
    (tmp_path / "worker.log").write_text(
        "".join(
            f"[2026-11-24 03:59:48,049] [1] [WARNING] {r.getMessage()}\n" for r in caplog.records
        )
    )
    record = Record()
    check_worker_logs(tmp_path, record)
    assert [(v.kind, v.subject, v.detail) for v in record.violations] == [
        ("input_gap", "refund_request[0]", "offsets 3..4 jumped over (worker.log)")
    ]


def test_a_clean_log_has_no_violation(tmp_path) -> None:
    (tmp_path / "worker-2.log").write_text("[INFO] Worker ready\n")
    record = Record()
    check_worker_logs(tmp_path, record)
    assert record.violations == []
