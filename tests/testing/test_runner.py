"""Running test cases on a real throwaway server: what passes, what fails, and the diff."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from topology.server import ServerCluster, ServerProcess
from topology.testing import TestResult, TestServer, check_test_file, run_case, run_files

SHOP = Path(__file__).with_name("shop") / "shop.yaml"


@pytest.fixture(scope="module")
def server() -> Iterator[TestServer]:
    with TestServer() as server:
        yield server


def shop_file(tmp_path: Path, tests: str) -> Path:
    path = tmp_path / "shop_test.yaml"
    path.write_text(f"config: {SHOP}\ntests:\n" + textwrap.dedent(tests))
    return path


async def run_one(
    server: TestServer, tmp_path: Path, tests: str, timeout: float = 20.0
) -> TestResult:
    test_file, problems = check_test_file(shop_file(tmp_path, tests))
    assert test_file is not None, [str(p) for p in problems]
    [case] = test_file.tests
    return await run_case(server, test_file, case, timeout)


async def test_matching_events_pass(server: TestServer, tmp_path: Path) -> None:
    result = await run_one(
        server,
        tmp_path,
        """\
        - name: priced
          given:
            orders: [{name: order.created, payload: {id: 1, qty: 2, price: 5}}]
          expect:
            priced:
              - name: order.priced
                topic: small
                payload: {id: 1, total: 10, lines: {count: 2, calls: 1}}
            dlq: []
        """,
    )
    assert result.diff == [] and result.passed
    assert result.id.endswith("shop_test.yaml::priced")


async def test_a_wrong_payload_fails_with_what_is_missing_and_what_came(
    server: TestServer, tmp_path: Path
) -> None:
    result = await run_one(
        server,
        tmp_path,
        """\
        - name: wrong total
          given:
            orders: [{name: order.created, payload: {id: 1, qty: 2, price: 5}}]
          expect:
            priced: [{name: order.priced, payload_contains: {total: 11}}]
        """,
    )
    assert not result.passed
    assert result.diff[:2] == [
        "priced: expected 1 event, got 1",
        '  - missing: name=order.priced payload_contains={"total": 11}',
    ]
    assert result.diff[2].startswith(
        '  + unexpected: name=order.priced topic=small payload={"id": 1, '
        '"lines": {"calls": 1, "count": 2}, "total": 10} (id '
    )


async def test_events_compare_as_a_multiset_unless_ordered(
    server: TestServer, tmp_path: Path
) -> None:
    given = (
        "  given:\n"
        "    orders:\n"
        "      - {name: order.created, payload: {id: 1, qty: 1, price: 1}}\n"
        "      - {name: order.created, payload: {id: 2, qty: 1, price: 1}}\n"
        "      - {name: order.created, payload: {id: 3, qty: 1, price: 1}}\n"
    )
    backwards = (
        "  expect:\n    tallies: [{payload: {id: 3}}, {payload: {id: 2}}, {payload: {id: 1}}]\n"
    )
    forwards = (
        "  expect:\n    tallies: [{payload: {id: 1}}, {payload: {id: 2}}, {payload: {id: 3}}]\n"
    )
    unordered = await run_one(server, tmp_path, "- name: any order\n" + given + backwards)
    assert unordered.passed, unordered.diff
    ordered = await run_one(
        server, tmp_path, "- name: in order\n  ordered: true\n" + given + backwards
    )
    assert ordered.diff[0] == "tallies: expected 3 events (in order), got 3"
    assert '  - missing at #1: payload={"id": 3}' in ordered.diff
    in_order = await run_one(server, tmp_path, "- name: same\n  ordered: true\n" + given + forwards)
    assert in_order.passed, in_order.diff


async def test_a_multiset_counts_duplicates(server: TestServer, tmp_path: Path) -> None:
    result = await run_one(
        server,
        tmp_path,
        """\
        - name: twice
          given:
            orders: [{name: order.created, payload: {id: 1, qty: 1, price: 1}}]
          expect:
            tallies: [{payload: {id: 1}}, {payload: {id: 1}}]
        """,
    )
    assert result.diff == [
        "tallies: expected 2 events, got 1",
        '  - missing: payload={"id": 1}',
    ]


async def test_payload_contains_matches_nested_objects(server: TestServer, tmp_path: Path) -> None:
    result = await run_one(
        server,
        tmp_path,
        """\
        - name: nested
          given:
            orders: [{name: order.created, payload: {id: 4, qty: 3, price: 2}}]
          expect:
            priced: [{payload_contains: {id: 4, lines: {count: 3}}}]
        """,
    )
    assert result.passed, result.diff


async def test_an_empty_stream_expectation_fails_on_any_event(
    server: TestServer, tmp_path: Path
) -> None:
    result = await run_one(
        server,
        tmp_path,
        """\
        - name: quiet
          given:
            orders: [{name: order.created, payload: {id: 5, qty: 1, price: 1}}]
          expect:
            tallies: []
        """,
    )
    assert result.diff[0] == "tallies: expected no events, got 1 event"
    assert result.diff[1].startswith('  + unexpected: name=tally payload={"id": 5}')


async def test_a_raising_handler_is_retried_then_dead_lettered(
    server: TestServer, tmp_path: Path
) -> None:
    result = await run_one(
        server,
        tmp_path,
        """\
        - name: bad quantity
          given:
            orders:
              - {name: order.created, payload: {id: 6, qty: -1, price: 1}}
              - {name: order.created, payload: {id: 7, qty: 1, price: 1}}
          expect:
            priced: [{name: order.priced, payload_contains: {id: 7}}]
            dlq: [{name: order.created, payload: {id: 6, qty: -1, price: 1}}]
        """,
    )
    assert result.passed, result.diff


async def test_a_topology_that_never_settles_fails_at_the_timeout_naming_what_is_pending(
    server: TestServer, tmp_path: Path
) -> None:
    result = await run_one(
        server,
        tmp_path,
        """\
        - name: stuck
          timeout: 300ms
          given:
            slow: [{name: job, payload: {}}]
          expect:
            slow: [{name: job}]
        """,
    )
    assert result.diff == [
        "timeout: not idle after 0.3s: actor stuck#0: 1 event(s) in hand; "
        "sink stuck: 1 event(s) of stream slow pending"
    ]


async def test_a_sink_starting_at_newest_sees_the_given_events(
    server: TestServer, tmp_path: Path
) -> None:
    result = await run_one(
        server,
        tmp_path,
        """\
        - name: newest
          given:
            orders: [{name: order.created, payload: {id: 8, qty: 1, price: 1}}]
          expect:
            tallies: [{name: tally, payload: {id: 8}}]
        """,
    )
    assert result.passed, result.diff


async def test_text_payloads_and_topic_filters(server: TestServer, tmp_path: Path) -> None:
    result = await run_one(
        server,
        tmp_path,
        """\
        - name: big orders are audited
          given:
            orders:
              - {name: order.created, payload: {id: 9, qty: 20, price: 5}}
              - {name: order.created, payload: {id: 10, qty: 1, price: 5}}
          expect:
            priced:
              - {topic: big, payload_contains: {id: 9}}
              - {topic: small, payload_contains: {id: 10}}
            audit: [{name: audit.big, payload: big order 9}]
        """,
    )
    assert result.passed, result.diff


async def test_state_of_a_sink_without_state_fails_clearly(
    server: TestServer, tmp_path: Path
) -> None:
    result = await run_one(server, tmp_path, "- name: state\n  state: {price: {k: {n: 1}}}\n")
    assert result.diff == ["state of price: this topology has no stateful sink 'price'"]


async def test_sources_run_only_when_asked(server: TestServer, tmp_path: Path) -> None:
    with_sources = await run_one(
        server,
        tmp_path,
        """\
        - name: fed
          sources: true
          expect:
            tallies: [{payload: {id: 100}}, {payload: {id: 101}}, {payload: {id: 102}}]
        """,
    )
    assert with_sources.passed, with_sources.diff
    without = await run_one(server, tmp_path, "- name: quiet\n  expect: {tallies: []}\n")
    assert without.passed, without.diff


async def test_each_case_starts_from_a_clean_server_and_fresh_handler_modules(
    server: TestServer, tmp_path: Path
) -> None:
    path = shop_file(
        tmp_path,
        """\
        - name: first
          given:
            orders: [{name: order.created, payload: {id: 1, qty: 1, price: 1}}]
          expect:
            priced: [{payload_contains: {id: 1, lines: {calls: 1}}}]
        - name: second
          given:
            orders: [{name: order.created, payload: {id: 2, qty: 1, price: 1}}]
          expect:
            priced: [{payload_contains: {id: 2, lines: {calls: 1}}}]
        """,
    )
    test_file, _ = check_test_file(path)
    assert test_file is not None
    results = await run_files([test_file])
    assert [(r.name, r.diff) for r in results] == [("first", []), ("second", [])]


async def test_a_given_server_is_shared_under_a_prefix_and_left_as_found(
    redis_server: ServerProcess, redis_url: str, tmp_path: Path
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set("someone-else", "kept")
        with TestServer(redis_url) as given:
            result = await run_one(
                given,
                tmp_path,
                """\
                - name: shared
                  given:
                    orders: [{name: order.created, payload: {id: 1, qty: 1, price: 1}}]
                  expect:
                    tallies: [{payload: {id: 1}}]
                """,
            )
        assert result.passed, result.diff
        assert await client.keys("*") == [b"someone-else"]
    finally:
        await client.aclose()


async def test_a_given_cluster_works_and_is_left_as_found(
    redis_cluster: ServerCluster, tmp_path: Path
) -> None:
    redis_cluster.flush()
    with TestServer(redis_cluster.url) as given:
        result = await run_one(
            given,
            tmp_path,
            """\
            - name: on a cluster
              given:
                orders: [{name: order.created, payload: {id: 1, qty: 1, price: 1}}]
              expect:
                priced: [{payload_contains: {id: 1, total: 1}}]
                tallies: [{payload: {id: 1}}]
            """,
        )
    assert result.passed, result.diff
    for port in redis_cluster.ports:
        client = aioredis.Redis(port=port)
        try:
            assert await client.dbsize() == 0
        finally:
            await client.aclose()
