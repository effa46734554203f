"""A stateful sink is marked in the graph and in every rendering; the others are not."""

from __future__ import annotations

from topology.config.model import StateSpec
from topology.graph import build
from topology.render import as_json, dot, mermaid

from ._topologies import orders, replace_sink


def stateful() -> object:
    topology = replace_sink(orders(), "report", key="customer.id", state=StateSpec(ttl=7 * 86400))
    return build(replace_sink(topology, "large", key="user", state=StateSpec(), consumers=0))


def test_the_graph_marks_stateful_sinks_and_says_their_key() -> None:
    graph = stateful()
    assert graph.nodes["sink:report"]["stateful"] is True
    assert graph.nodes["sink:enrich"]["stateful"] is False
    assert graph.nodes["sink:report"]["detail"].endswith(", state by customer.id, ttl 168h")
    assert "state" not in graph.nodes["sink:enrich"]["detail"]


def test_mermaid_titles_a_stateful_sink_with_its_key() -> None:
    text = mermaid(stateful())  # type: ignore[arg-type]
    titles = [line for line in text.splitlines() if "subgraph sink_" in line]
    assert any("report · handlers#58;report, state by customer.id, ttl 168h" in t for t in titles)
    assert not any("enrich" in t and "state by" in t for t in titles)
    # A sink without consumers is a plain node: its detail carries the mark.
    assert any("large" in line and "state by user" in line for line in text.splitlines())


def test_dot_gives_stateful_sinks_a_double_border() -> None:
    lines = dot(stateful()).splitlines()  # type: ignore[arg-type]
    report = next(line for line in lines if line.startswith('  "sink:report" ['))
    enrich = next(line for line in lines if line.startswith('  "sink:enrich" ['))
    assert "peripheries=2, stateful=true" in report and "state by customer.id" in report
    assert "peripheries" not in enrich and "stateful" not in enrich


def test_json_carries_the_mark_and_the_state_spec() -> None:
    nodes = {n["id"]: n for n in as_json(stateful())["nodes"]}  # type: ignore[arg-type]
    assert nodes["sink:report"]["stateful"] is True
    assert nodes["sink:report"]["spec"]["key"] == "customer.id"
    assert nodes["sink:report"]["spec"]["state"] == {"ttl": 7 * 86400}
    assert (
        nodes["sink:enrich"]["stateful"] is False and nodes["sink:enrich"]["spec"]["state"] is None
    )


def test_plan_shows_key_and_state_changes_as_a_config_writes_them() -> None:
    from topology.plan import diff

    old = replace_sink(orders(), "report", key="customer.id", state=StateSpec(ttl=3600))
    new = replace_sink(orders(), "report", key="customer", state=StateSpec())
    lines = diff(old, new).describe()
    assert "sink report: key customer.id -> customer (restart)" in lines
    assert "sink report: state {ttl: 1h} -> {} (restart)" in lines
    assert "sink report: state {} -> none (restart)" in diff(new, orders()).describe()
