"""The flow graph: node ids and kinds, one actor per consumer, edges carrying filters."""

from __future__ import annotations

import dataclasses

from tests.graph._topologies import orders, replace_sink, with_item
from topology.config.model import SinkSpec, StreamRef, StreamSpec, Topology
from topology.graph import build, cycles, read_edges, topic_id


def kinds(graph, kind: str) -> list[str]:
    return [n for n, d in graph.nodes(data=True) if d["kind"] == kind]


def test_nodes_are_typed_by_prefix_and_keep_their_spec() -> None:
    topology = orders()
    graph = build(topology)
    assert kinds(graph, "stream") == [
        "stream:orders",
        "stream:enriched",
        "stream:alerts",
        "stream:orders-dlq",
    ]
    assert kinds(graph, "source") == ["source:generate"]
    assert kinds(graph, "sink") == [
        "sink:enrich",
        "sink:us",
        "sink:large",
        "sink:report",
        "sink:dead",
    ]
    assert sorted(kinds(graph, "topic")) == ["topic:orders/eu.orders", "topic:orders/us.orders"]
    assert graph.nodes["sink:enrich"]["spec"] is topology.sinks["enrich"]
    assert graph.nodes["stream:alerts"]["spec"] is topology.streams["alerts"]
    assert graph.nodes["stream:alerts"]["detail"] == "ttl 24h"
    assert graph.graph["topology"] is topology
    assert graph.graph["redis"] is topology.redis


def test_one_actor_per_consumer_named_sink_hash_index() -> None:
    graph = build(orders())
    actors = kinds(graph, "actor")
    assert len(actors) == orders().actor_count() == 4 + 1 + 1 + 2 + 1
    assert [a for a in actors if a.startswith("actor:enrich#")] == [
        f"actor:enrich#{i}" for i in range(4)
    ]
    edge = graph.edges["sink:enrich", "actor:enrich#3"]
    assert edge == {"kind": "consumer", "index": 3}
    assert graph.nodes["actor:enrich#3"]["sink"] == "enrich"
    assert graph.nodes["actor:enrich#3"]["index"] == 3


def test_read_edges_carry_filter_value_and_start() -> None:
    graph = build(orders())
    assert graph.edges["stream:orders", "sink:enrich"] == {
        "kind": "read",
        "stream": "orders",
        "filter": "pattern",
        "value": r"eu\..*",
        "start": "oldest",
    }
    assert graph.edges["stream:orders", "sink:large"]["filter"] == "matcher"
    assert graph.edges["stream:orders", "sink:large"]["value"] == "handlers:is_large"
    # A topic filter reads from the topic node, not from the stream.
    assert not graph.has_edge("stream:orders", "sink:us")
    assert graph.edges["topic:orders/us.orders", "sink:us"]["filter"] == "topic"
    assert graph.edges["topic:orders/us.orders", "sink:us"]["stream"] == "orders"
    assert graph.edges["stream:orders-dlq", "sink:dead"]["filter"] == "all"
    assert graph.edges["stream:orders-dlq", "sink:dead"]["value"] is None


def test_read_edges_follow_the_sinks_stream_order_and_per_stream_start() -> None:
    graph = build(orders())
    edges = read_edges(graph, "report")
    assert [(e["stream"], e["start"]) for e in edges] == [
        ("enriched", "newest"),
        ("alerts", "oldest"),
    ]


def test_writes_outputs_and_dead_letter_edges() -> None:
    graph = build(orders())
    assert graph.edges["source:generate", "stream:orders"] == {
        "kind": "write",
        "topic": "eu.orders",
    }
    assert graph.edges["sink:enrich", "stream:enriched"]["kind"] == "write"
    assert graph.edges["sink:enrich", "stream:alerts"]["kind"] == "write"
    assert graph.edges["sink:enrich", "stream:orders-dlq"] == {"kind": "dlq"}
    assert graph.edges["stream:orders", "topic:orders/eu.orders"] == {"kind": "topic"}


def test_dead_letter_that_is_also_an_output_marks_the_single_edge() -> None:
    topology = replace_sink(orders(), "enrich", outputs=("enriched", "orders-dlq"))
    graph = build(topology)
    assert graph.edges["sink:enrich", "stream:orders-dlq"] == {"kind": "write", "dlq": True}


def test_topic_named_only_by_a_sink_filter_becomes_a_topic_node() -> None:
    topology = replace_sink(orders(), "us", topic="ca.orders")
    graph = build(topology)
    assert graph.nodes["topic:orders/ca.orders"]["kind"] == "topic"
    assert graph.has_edge("stream:orders", "topic:orders/ca.orders")


def test_topic_ids_of_streams_with_slashes_do_not_collide() -> None:
    topology = Topology(
        name="t",
        streams={
            "a/b": StreamSpec("a/b", topics=("c",)),
            "a": StreamSpec("a", topics=("b/c",)),
        },
    )
    graph = build(topology)
    assert topic_id("a/b", "c") != topic_id("a", "b/c")
    topics = {(d["stream"], d["name"]) for _, d in graph.nodes(data=True) if d["kind"] == "topic"}
    assert topics == {("a/b", "c"), ("a", "b/c")}


def test_stream_sink_and_source_may_share_a_name() -> None:
    topology = Topology(
        name="t",
        streams={"x": StreamSpec("x"), "y": StreamSpec("y")},
        sinks={"x": SinkSpec("x", (StreamRef("x"),), "h:f", outputs=("y",))},
    )
    graph = build(topology)
    assert graph.has_edge("stream:x", "sink:x")
    assert graph.has_edge("sink:x", "stream:y")


def test_a_loop_through_two_sinks_is_a_cycle() -> None:
    topology = Topology(
        name="t",
        streams={"a": StreamSpec("a"), "b": StreamSpec("b")},
        sinks={
            "ab": SinkSpec("ab", (StreamRef("a"),), "h:f", outputs=("b",)),
            "ba": SinkSpec("ba", (StreamRef("b"),), "h:f", topic="t", outputs=("a",)),
        },
    )
    assert cycles(build(topology)) == [["sink:ab", "stream:b", "sink:ba", "stream:a"]]


def test_a_sink_writing_to_the_stream_it_reads_is_a_cycle() -> None:
    topology = Topology(
        name="t",
        streams={"a": StreamSpec("a")},
        sinks={"loop": SinkSpec("loop", (StreamRef("a"),), "h:f", outputs=("a",))},
    )
    assert cycles(build(topology)) == [["sink:loop", "stream:a"]]


def test_dead_letters_read_back_into_the_source_stream_close_a_cycle() -> None:
    topology = orders()
    topology = with_item(
        topology,
        "sinks",
        SinkSpec("redrive", (StreamRef("orders-dlq"),), "h:f", outputs=("orders",)),
    )
    found = cycles(build(topology))
    assert ["sink:enrich", "stream:orders-dlq", "sink:redrive", "stream:orders"] in found


def test_the_example_pipeline_has_no_cycle() -> None:
    assert cycles(build(orders())) == []


def test_empty_topology_is_an_empty_graph() -> None:
    graph = build(Topology.empty())
    assert graph.number_of_nodes() == 0
    assert cycles(graph) == []


def test_a_sink_reading_an_undeclared_stream_gets_an_implicit_stream_node() -> None:
    # The loader rejects this; a hand-built model must still give a usable graph.
    topology = Topology(name="t", sinks={"s": SinkSpec("s", (StreamRef("ghost"),), "h:f")})
    graph = build(topology)
    assert graph.nodes["stream:ghost"]["spec"] == StreamSpec("ghost")


def test_graph_is_rebuilt_not_shared_between_topologies() -> None:
    a = build(orders())
    b = build(dataclasses.replace(orders(), name="other"))
    assert a.graph["name"] == "orders"
    assert b.graph["name"] == "other"
