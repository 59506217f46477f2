"""The delivery verdict the e2e tests and the chaos suite give: lost, duplicated, reordered."""

from __future__ import annotations

import json

import pytest

from kafka_sidecar_localenv.delivery import verify

pytestmark = pytest.mark.unit


def record(key: str, seq: int) -> bytes:
    return json.dumps({"key": key, "seq": seq, "pad": "x"}).encode()


def report(last: dict[str, int], **counts: int) -> dict[str, object]:
    produced = sum(v + 1 for v in last.values())
    return {"produced": produced, "failed": 0, "unflushed": 0, "last": last, **counts}


def test_everything_once_and_in_order_is_ok() -> None:
    result = verify([report({"a": 2, "b": 1}, resent=0)], map(record, "aabab", [0, 1, 0, 2, 1]))
    assert result.ok
    assert (result.events, result.consumed, result.lost) == (5, 5, 0)
    assert (result.duplicates, result.reorderings) == (0, 0)


def test_a_gap_is_lost_and_names_its_key() -> None:
    result = verify([report({"a": 3})], [record("a", 0), record("a", 1), record("a", 3)])
    assert not result.ok
    assert result.lost == 1
    assert result.missing_keys == ["a"]
    assert result.reorderings == 1, "3 came straight after 1"


def test_duplicates_and_reorderings_are_counted_apart() -> None:
    values = [record("a", 0), record("a", 2), record("a", 1), record("a", 2), record("a", 0)]
    result = verify([report({"a": 2}, resent=2, buffer_waits=7)], values)
    assert result.lost == 0
    assert result.duplicates == 2
    assert result.reorderings == 2, "2 before 1, then 1 after 2"
    assert (result.resent, result.buffer_waits) == (2, 7)


def test_a_producer_that_gave_up_is_not_ok_even_with_nothing_missing() -> None:
    result = verify([{**report({"a": 0}), "failed": 1}], [record("a", 0)])
    assert result.lost == 0
    assert not result.ok


def test_records_that_are_not_the_sample_apps_are_ignored() -> None:
    result = verify([report({"a": 0})], [b"not json at all"[:0], b'{"other": 1}', record("a", 0)])
    assert result.ok
    assert result.consumed == 3


def test_a_key_claimed_by_two_reports_cannot_hide_a_loss() -> None:
    """A restarted app process reuses its keys from 0: its report must not cover the first
    instance's gaps."""
    first = {"app": "p", "worker": 0, **report({"a": 2})}
    second = {"app": "p", "worker": 0, **report({"a": 1})}
    result = verify([first, second], [record("a", 0), record("a", 1)])
    assert not result.ok
    assert result.bad_reports == ["p/0: key a also reported by another process"]


def test_a_report_whose_count_does_not_match_its_keys_is_not_trusted() -> None:
    result = verify([{**report({"a": 1}), "produced": 5}], [record("a", 0), record("a", 1)])
    assert not result.ok
    assert len(result.bad_reports) == 1


def test_duplicates_are_explained_only_by_their_own_workers_resends() -> None:
    values = [record("a", 0), record("a", 0), record("b", 0)]
    mine = verify([report({"a": 0}, resent=1), report({"b": 0}, resent=0)], values)
    assert mine.unexplained_duplicates == 0
    elsewhere = verify([report({"a": 0}, resent=0), report({"b": 0}, resent=1)], values)
    assert elsewhere.duplicates == 1
    assert elsewhere.unexplained_duplicates == 1, "b's re-send does not explain a's duplicate"
