"""Renderers: mermaid ids and labels survive any name, DOT is quoted, JSON is plain data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.graph._topologies import orders, replace_sink
from topology.config import load
from topology.config.model import SinkSpec, StreamRef, StreamSpec, Topology
from topology.graph import build
from topology.render import (
    MAX_MERMAID_ACTORS,
    as_json,
    dot,
    mermaid,
    mermaid_ids,
    mermaid_text,
    redact_url,
    render,
)

NASTY = Path(__file__).with_name("nasty-names.yaml")

#: What a mermaid node id may be: the kind prefix, then ASCII word characters.
SAFE_ID = re.compile(r"(source|stream|topic|sink|actor)_[A-Za-z0-9_]+")
#: Mermaid's keywords, which must never be an id on their own.
KEYWORDS = {
    "end",
    "graph",
    "subgraph",
    "flowchart",
    "style",
    "classDef",
    "class",
    "click",
    "default",
}


_ID = r"(source|stream|topic|sink|actor)_[A-Za-z0-9_]+"
STATEMENTS = [
    rf"  subgraph {_ID} \[\"\"\]",
    r"  end",
    rf"\s+{_ID}(\(\[\"\"\]\)|\[\(\"\"\)\]|\[\"\"\]|\(\"\"\))",
    rf"  {_ID} (-->|-\.->)(\|\"\"\|)? {_ID}",
    r"  classDef [a-z]+ [a-z:#0-9,-]+",
    rf"  class {_ID}(,{_ID})* [a-z]+",
    r"  %% topology [^\n]*",
]


def nasty_graph():
    return build(load(NASTY))


def quoted_strings(text: str) -> list[str]:
    return re.findall(r'"([^"]*)"', text)


def test_nasty_names_get_safe_unique_ids() -> None:
    graph = nasty_graph()
    ids = mermaid_ids(graph)
    assert len(set(ids.values())) == graph.number_of_nodes()
    for node, mid in ids.items():
        assert SAFE_ID.fullmatch(mid), (node, mid)
        assert mid not in KEYWORDS
    assert ids["stream:end"] == "stream_end"
    assert ids["sink:🚀"] == "sink_u1f680"  # no ASCII at all: the code point
    assert ids["stream:-->"] == "stream_u2d"


def test_colliding_slugs_are_numbered() -> None:
    topology = Topology(
        name="t",
        streams={n: StreamSpec(n) for n in ("a.b", "a-b", "a b", "a_b_2")},
    )
    assert list(mermaid_ids(build(topology)).values()) == [
        "stream_a_b",
        "stream_a_b_2",
        "stream_a_b_3",
        "stream_a_b_2_2",
    ]


def test_nasty_names_never_reach_the_syntax_unescaped() -> None:
    text = mermaid(nasty_graph())
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    # Every user string is inside quotes, and nothing inside quotes can close
    # them, start an entity of its own, or be read as HTML or markdown.
    for chunk in quoted_strings(text):
        for entity in re.findall(r"#[^;]*;", chunk):
            assert re.fullmatch(r"#([a-z]+|\d+);", entity), (chunk, entity)
        bare = re.sub(r"<br/>|</?small>|#([a-z]+|\d+);", "", chunk)
        assert not re.search(r"[#&<>`|:;%\\\[\]{}()]", bare), chunk
    # Outside quotes, every line is one of the statement shapes the renderer writes.
    outside = re.sub(r'"[^"]*"', '""', text)
    for line in outside.splitlines()[1:]:
        assert any(re.fullmatch(shape, line) for shape in STATEMENTS), line


def test_label_escaping_round_trips_through_entity_codes() -> None:
    name = 'say "hi" <b>#1</b> & a|b:c;d%e`f\\g\nh'
    escaped = mermaid_text(name)
    assert '"' not in escaped
    assert escaped.startswith("say #quot;hi#quot; #lt;b#gt;#35;1")

    def decode(match: re.Match[str]) -> str:
        code = match.group(1)
        named = {"quot": '"', "amp": "&", "lt": "<", "gt": ">"}
        return named[code] if code in named else chr(int(code))

    assert re.sub(r"#(\w+);", decode, escaped) == name


def test_mermaid_places_topics_in_their_stream_and_actors_in_their_sink() -> None:
    text = mermaid(build(orders()))
    assert 'subgraph stream_orders ["orders · max_len 100000"]' in text
    block = text.split("subgraph stream_orders", 1)[1].split("  end", 1)[0]
    assert 'topic_orders_eu_orders["eu.orders"]' in block
    sink = text.split("subgraph sink_enrich", 1)[1].split("  end", 1)[0]
    assert [line.split("(")[0].strip() for line in sink.splitlines()[1:]] == [
        f"actor_enrich_{i}" for i in range(4)
    ]
    assert 'stream_enriched[("enriched")]' in text


def test_mermaid_edges_are_labelled_with_the_filter() -> None:
    text = mermaid(build(orders()))
    assert 'stream_orders -->|"/eu#92;..*/, from oldest"| sink_enrich' in text
    assert 'topic_orders_us_orders -->|"topic us.orders"| sink_us' in text
    assert 'stream_orders -->|"matcher handlers#58;is_large"| sink_large' in text
    assert "stream_orders_dlq --> sink_dead" in text
    assert 'stream_alerts -->|"from oldest"| sink_report' in text
    assert "source_generate --> topic_orders_eu_orders" in text  # its default topic
    assert 'sink_enrich -.->|"dead letter"| stream_orders_dlq' in text
    assert "sink_enrich --> stream_alerts" in text


def test_mermaid_folds_many_consumers_into_one_node() -> None:
    topology = replace_sink(orders(), "report", consumers=MAX_MERMAID_ACTORS + 10)
    text = mermaid(build(topology))
    sink = text.split("subgraph sink_report", 1)[1].split("  end", 1)[0]
    (actor,) = sink.splitlines()[1:]
    assert f"{MAX_MERMAID_ACTORS + 10} consumers" in actor
    assert "actor_report_1" not in text


def test_mermaid_of_a_dead_letter_that_is_also_an_output() -> None:
    topology = replace_sink(orders(), "enrich", outputs=("enriched", "orders-dlq"))
    text = mermaid(build(topology))
    assert 'sink_enrich -.->|"output, dead letter"| stream_orders_dlq' in text


def test_mermaid_of_an_empty_topology_is_still_a_flowchart() -> None:
    assert mermaid(build(Topology.empty())).splitlines()[0] == "flowchart LR"


def test_dot_quotes_every_id_and_label() -> None:
    topology = Topology(
        name='we"ird',
        streams={'a"b\\': StreamSpec('a"b\\', topics=("t\nu",))},
        sinks={"s -> x": SinkSpec("s -> x", (StreamRef('a"b\\'),), "h:f")},
    )
    text = dot(build(topology))
    assert text.startswith('digraph "we\\"ird" {')
    assert '"stream:a\\"b\\\\" [label="a\\"b\\\\"' in text
    assert '"topic:a\\"b\\\\/t\\nu"' in text
    assert '"stream:a\\"b\\\\" -> "sink:s -> x" [kind="read", label=""]' not in text
    assert '"stream:a\\"b\\\\" -> "sink:s -> x" [kind="read"];' in text
    assert text.rstrip().endswith("}")


def test_dot_clusters_topics_with_their_stream_and_dashes_dead_letters() -> None:
    text = dot(build(orders()))
    assert 'subgraph "cluster_0" {' in text
    assert '"sink:enrich" -> "stream:orders-dlq" [kind="dlq", style="dashed"' in text
    assert (
        '"stream:orders" -> "sink:enrich" [kind="read", label="/eu\\\\..*/, from oldest"];' in text
    )


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_dot_output_is_accepted_by_graphviz() -> None:
    for graph in (build(orders()), nasty_graph()):
        result = subprocess.run(
            ["dot", "-Tsvg"], input=dot(graph), capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr


def test_json_is_plain_serialisable_data() -> None:
    data = as_json(build(orders()))
    assert json.loads(json.dumps(data)) == data  # no dataclass, no tuple survives
    assert data["format"] == "ponos-topology.graph/1"
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes["sink:enrich"]["spec"]["retry"] == {
        "max_attempts": 5,
        "backoff": 0.1,
        "max_backoff": 30.0,
    }
    assert nodes["sink:report"]["spec"]["streams"] == [
        {"name": "enriched", "start": None},
        {"name": "alerts", "start": "oldest"},
    ]
    assert nodes["actor:enrich#2"] == {
        "id": "actor:enrich#2",
        "kind": "actor",
        "name": "enrich#2",
        "sink": "enrich",
        "index": 2,
        "label": "enrich#2",
        "detail": "",
    }
    edges = {(e["source"], e["target"]): e for e in data["edges"]}
    assert edges["topic:orders/us.orders", "sink:us"] == {
        "source": "topic:orders/us.orders",
        "target": "sink:us",
        "kind": "read",
        "stream": "orders",
        "filter": "topic",
        "value": "us.orders",
        "start": "newest",
    }
    assert len(data["edges"]) == build(orders()).number_of_edges()


def test_json_masks_the_redis_password() -> None:
    data = as_json(build(orders()))
    assert data["redis"] == {"url": "redis://app:***@db.internal:6380/0", "prefix": "pulse"}
    assert "s3cret" not in json.dumps(data)
    assert "s3cret" not in render(build(orders()), "json")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (None, None),
        ("redis://localhost:6380/0", "redis://localhost:6380/0"),
        ("redis://:pw@h:1", "redis://:***@h:1"),
        ("rediss://u:pw@[::1]:6380/2", "rediss://u:***@[::1]:6380/2"),
        ("redis://u:pw@h:notaport", "redis://u:***@h:notaport"),
        ("redis://h:1/0?password=pw", "redis://h:1/0?password=***"),
    ],
)
def test_redact_url(url: str | None, shown: str | None) -> None:
    assert redact_url(url) == shown


def test_render_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'svg'"):
        render(build(orders()), "svg")


NAMES = st.text(min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(streams=st.lists(NAMES, min_size=1, max_size=4, unique=True), sink=NAMES, topic=NAMES)
def test_any_names_give_well_formed_mermaid(streams: list[str], sink: str, topic: str) -> None:
    topology = Topology(
        name="t",
        streams={s: StreamSpec(s, topics=(topic,)) for s in streams[:1]}
        | {s: StreamSpec(s) for s in streams[1:]},
        sinks={
            sink: SinkSpec(
                sink,
                tuple(StreamRef(s) for s in streams),
                "h:f",
                topic_pattern=topic,
                consumers=2,
                outputs=(streams[-1],),
                dead_letter=streams[0],
            )
        },
    )
    graph = build(topology)
    ids = mermaid_ids(graph)
    assert len(set(ids.values())) == len(ids)
    outside = re.sub(r'"[^"]*"', '""', mermaid(graph))
    for line in outside.splitlines()[1:]:
        assert any(re.fullmatch(shape, line) for shape in STATEMENTS), line


@given(st.text())
def test_mermaid_text_decodes_back_to_the_original(text: str) -> None:
    named = {"quot": '"', "amp": "&", "lt": "<", "gt": ">"}
    escaped = mermaid_text(text)
    assert '"' not in escaped and "\n" not in escaped
    decoded = re.sub(r"#(\w+);", lambda m: named.get(m.group(1)) or chr(int(m.group(1))), escaped)
    assert decoded == text
