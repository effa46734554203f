"""The reload plan: what diff(old, new) says, and how describe() and to_json() say it."""

from __future__ import annotations

import dataclasses
import json

from tests.graph._topologies import orders, replace_sink, with_item, without
from topology.config.model import (
    RedisSpec,
    RetryPolicy,
    SinkSpec,
    SourceSpec,
    StreamRef,
    StreamSpec,
    Topology,
)
from topology.plan import Plan, SinkChange, diff


def test_identical_topologies_give_an_empty_plan() -> None:
    plan = diff(orders(), orders())
    assert plan.is_empty
    assert plan.describe() == []
    assert plan.to_json()["empty"] is True


def test_start_from_empty_adds_every_stream_sink_and_source() -> None:
    topology = orders()
    plan = diff(Topology.empty(), topology)
    assert plan.streams_added == ("orders", "enriched", "alerts", "orders-dlq")
    assert plan.sinks_added == ("enrich", "us", "large", "report", "dead")
    assert plan.sources_added == ("generate",)
    assert plan.unsupported == ()  # a blank old topology has no name to change
    assert not plan.streams_removed and not plan.sinks_changed
    lines = plan.describe()
    assert lines[:4] == [f"stream {s}: added" for s in plan.streams_added]
    assert "sink enrich: added (4 consumers)" in lines
    assert "sink us: added (1 consumer)" in lines
    assert lines[-1] == "source generate: added"  # producers start after their readers


def test_stop_to_empty_removes_everything() -> None:
    plan = diff(orders(), Topology.empty())
    assert plan.sinks_removed == ("enrich", "us", "large", "report", "dead")
    assert plan.sources_removed == ("generate",)
    assert plan.unsupported == ()
    assert plan.describe()[-1] == "stream orders-dlq: removed (its data is kept)"


def test_stream_added_to_a_sink_is_a_live_change_with_its_start() -> None:
    old = orders()
    new = replace_sink(old, "report", streams=(*old.sinks["report"].streams, StreamRef("orders")))
    new = replace_sink(new, "report", start="oldest")  # the new group's effective start
    plan = diff(old, new)
    (change,) = plan.sinks_changed
    assert change.name == "report"
    assert change.streams_added == (StreamRef("orders", "oldest"),)
    assert not change.needs_restart
    assert "sink report: + stream orders (start oldest)" in plan.describe()


def test_stream_removed_from_a_sink_keeps_its_group() -> None:
    old = orders()
    new = replace_sink(old, "report", streams=(StreamRef("enriched"),))
    (change,) = diff(old, new).sinks_changed
    assert change.streams_removed == ("alerts",)
    assert change.streams_added == ()
    assert not change.needs_restart
    assert diff(old, new).describe() == ["sink report: - stream alerts (group kept)"]


def test_rescaled_sink_reports_old_and_new_consumers() -> None:
    old = orders()
    new = replace_sink(old, "enrich", consumers=2)
    plan = diff(old, new)
    assert plan.sinks_changed == (SinkChange("enrich", consumers=(4, 2)),)
    assert plan.describe() == ["sink enrich: consumers 4 -> 2"]


def test_handler_change_needs_a_restart() -> None:
    old = orders()
    plan = diff(old, replace_sink(old, "us", handler="handlers:us_v2"))
    (change,) = plan.sinks_changed
    assert change.restart == ("handler",)
    assert change.needs_restart
    assert plan.describe() == ["sink us: handler handlers:us -> handlers:us_v2 (restart)"]


def test_every_option_change_needs_a_restart_in_field_order() -> None:
    old = orders()
    new = replace_sink(
        old,
        "enrich",
        topic_pattern=r"eu\.(fr|de)",
        outputs=("enriched",),
        ack_grace=5.0,
        batch=10,
        retry=RetryPolicy(max_attempts=2, backoff=0.5),
        dead_letter=None,
    )
    (change,) = diff(old, new).sinks_changed
    assert change.restart == (
        "topic_pattern",
        "outputs",
        "ack_grace",
        "batch",
        "retry",
        "dead_letter",
    )
    lines = diff(old, new).describe()
    assert "sink enrich: outputs [enriched, alerts] -> [enriched] (restart)" in lines
    assert "sink enrich: ack_grace 20s -> 5s (restart)" in lines
    assert "sink enrich: dead_letter orders-dlq -> none (restart)" in lines
    assert any(line.startswith("sink enrich: retry {max_attempts: 5") for line in lines)


def test_filter_kind_change_restarts_on_both_fields() -> None:
    old = orders()
    new = replace_sink(old, "us", topic=None, matcher="handlers:is_us")
    (change,) = diff(old, new).sinks_changed
    assert change.restart == ("topic", "matcher")


def test_changed_start_of_a_kept_stream_is_recorded_but_moves_nothing() -> None:
    old = orders()
    new = replace_sink(
        old, "report", streams=(StreamRef("enriched"), StreamRef("alerts", "newest"))
    )
    plan = diff(old, new)
    (change,) = plan.sinks_changed
    assert change.starts_changed == (("alerts", "oldest", "newest"),)
    assert change.streams_added == () and change.streams_removed == ()
    assert not change.needs_restart
    (line,) = plan.describe()
    assert line.startswith("sink report: start of alerts oldest -> newest")
    assert "new groups only" in line


def test_sink_start_change_overridden_on_every_stream_is_no_change() -> None:
    old = replace_sink(orders(), "report", streams=(StreamRef("enriched", "oldest"),))
    new = replace_sink(old, "report", start="oldest")
    assert diff(old, new).is_empty


def test_sink_added_and_removed() -> None:
    old = orders()
    audit = SinkSpec("audit", (StreamRef("orders"),), "handlers:audit", consumers=2)
    new = with_item(without(old, "sinks", "large"), "sinks", audit)
    plan = diff(old, new)
    assert plan.sinks_added == ("audit",)
    assert plan.sinks_removed == ("large",)
    assert plan.sinks_changed == ()
    assert plan.describe() == ["sink large: removed", "sink audit: added (2 consumers)"]


def test_stream_added_removed_and_changed() -> None:
    old = orders()
    new = with_item(old, "streams", StreamSpec("orders-eu", max_len=10))
    new = with_item(new, "streams", StreamSpec("alerts", ttl=3600.0))
    new = replace_sink(without(new, "streams", "orders-dlq"), "enrich", dead_letter=None)
    new = without(new, "sinks", "dead")
    plan = diff(old, new)
    assert plan.streams_added == ("orders-eu",)
    assert plan.streams_removed == ("orders-dlq",)
    assert plan.streams_changed == ("alerts",)
    lines = plan.describe()
    assert "stream alerts: ttl 24h -> 1h" in lines
    assert lines.index("stream orders-eu: added") < lines.index("sink dead: removed")
    assert lines[-1] == "stream orders-dlq: removed (its data is kept)"


def test_declared_topics_change_the_stream() -> None:
    old = orders()
    new = with_item(old, "streams", StreamSpec("orders", max_len=100000, topics=("eu.orders",)))
    new = replace_sink(new, "us", topic="eu.orders")
    plan = diff(old, new)
    assert plan.streams_changed == ("orders",)


def test_source_added_removed_and_changed() -> None:
    old = orders()
    new = with_item(old, "sources", SourceSpec("generate", "handlers:other", "orders"))
    new = with_item(new, "sources", SourceSpec("replay", "handlers:replay", "enriched"))
    plan = diff(old, new)
    assert plan.sources_added == ("replay",)
    assert plan.sources_changed == ("generate",)
    assert (
        "source generate: handler handlers:generate_orders -> handlers:other, "
        "topic eu.orders -> none (restart)" in plan.describe()
    )
    assert diff(new, old).sources_removed == ("replay",)


def test_name_and_redis_changes_are_unsupported_without_leaking_the_password() -> None:
    old = orders()
    new = dataclasses.replace(
        old, name="shipping", redis=RedisSpec(url="redis://app:0th3r@db2:6379/0", prefix="p2")
    )
    plan = diff(old, new)
    assert len(plan.unsupported) == 3
    assert not plan.is_empty
    text = "\n".join(plan.describe()) + json.dumps(plan.to_json())
    assert "name orders -> shipping" in text
    assert "redis.url changed" in text
    assert "redis.prefix pulse -> p2" in text
    assert "s3cret" not in text and "0th3r" not in text


def test_a_plan_of_only_what_a_reload_cannot_apply_has_no_live_changes() -> None:
    old = orders()
    renamed = diff(old, dataclasses.replace(old, name="shipping"))
    assert renamed.unsupported and not renamed.is_empty
    assert not renamed.has_live_changes  # the runtime leaves the running topology alone
    rescaled = diff(old, replace_sink(old, "enrich", consumers=8))
    assert rescaled.has_live_changes and not rescaled.unsupported


def test_to_json_is_plain_data_mirroring_the_plan() -> None:
    old = orders()
    new = replace_sink(old, "enrich", consumers=8, handler="handlers:enrich_v2")
    new = replace_sink(
        new, "report", streams=(StreamRef("enriched"), StreamRef("orders", "oldest"))
    )
    data = diff(old, new).to_json()
    assert json.loads(json.dumps(data)) == data
    by_name = {c["name"]: c for c in data["sinks_changed"]}
    assert by_name["enrich"]["consumers"] == [4, 8]
    assert by_name["enrich"]["restart"] == ["handler"]
    assert by_name["enrich"]["needs_restart"] is True
    assert by_name["report"]["streams_added"] == [{"name": "orders", "start": "oldest"}]
    assert by_name["report"]["streams_removed"] == ["alerts"]
    assert data["lines"] == diff(old, new).describe()


def test_plan_keeps_both_topologies_for_the_runtime() -> None:
    old, new = orders(), replace_sink(orders(), "enrich", consumers=1)
    plan = diff(old, new)
    assert isinstance(plan, Plan)
    assert plan.old is old and plan.new is new
    assert plan.sink_change("enrich") == SinkChange("enrich", consumers=(4, 1))
    assert plan.sink_change("us") is None


def test_a_changed_handler_module_restarts_the_sinks_and_sources_that_use_it() -> None:
    base = orders()
    sinks = dict(base.sinks)
    sinks["dead"] = dataclasses.replace(sinks["dead"], handler="review:log_dead")
    sinks["large"] = dataclasses.replace(sinks["large"], matcher="matchers:is_large")
    base = dataclasses.replace(base, sinks=sinks)
    old = dataclasses.replace(base, code={"handlers": "a", "review": "r", "matchers": "m"})
    new = dataclasses.replace(base, code={"handlers": "b", "review": "r", "matchers": "m2"})
    plan = diff(old, new)
    assert [c.name for c in plan.sinks_changed] == ["enrich", "us", "large", "report"]
    assert all(c.needs_restart and not c.restart for c in plan.sinks_changed)
    assert plan.sink_change("large") == SinkChange(
        name="large", code_changed=("handlers", "matchers")
    )
    assert plan.sources_changed == ("generate",)
    lines = plan.describe()
    assert "sink enrich: handler code changed (handlers) (restart)" in lines
    assert "sink large: handler code changed (handlers, matchers) (restart)" in lines
    assert "source generate: handler code changed (restart)" in lines
    assert plan.to_json()["sinks_changed"][0]["code_changed"] == ["handlers"]
    # A side without fingerprints (a hand-built model) never counts as a code change.
    assert diff(base, new).is_empty and diff(old, base).is_empty
