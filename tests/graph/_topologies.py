"""Hand-built topologies the graph tests share: no loader involved, every field explicit."""

from __future__ import annotations

import dataclasses
from typing import Any

from topology.config.model import (
    RedisSpec,
    RetryPolicy,
    SinkSpec,
    SourceSpec,
    StreamRef,
    StreamSpec,
    Topology,
)


def orders() -> Topology:
    """The DESIGN §3 example, with one sink per filter kind and a sink reading two streams."""
    return Topology(
        name="orders",
        redis=RedisSpec(url="redis://app:s3cret@db.internal:6380/0"),
        streams={
            "orders": StreamSpec("orders", max_len=100000, topics=("eu.orders", "us.orders")),
            "enriched": StreamSpec("enriched"),
            "alerts": StreamSpec("alerts", ttl=86400.0),
            "orders-dlq": StreamSpec("orders-dlq"),
        },
        sources={
            "generate": SourceSpec(
                "generate", "handlers:generate_orders", "orders", topic="eu.orders"
            )
        },
        sinks={
            "enrich": SinkSpec(
                "enrich",
                (StreamRef("orders"),),
                "handlers:enrich",
                topic_pattern=r"eu\..*",
                consumers=4,
                outputs=("enriched", "alerts"),
                start="oldest",
                retry=RetryPolicy(max_attempts=5, backoff=0.1),
                dead_letter="orders-dlq",
            ),
            "us": SinkSpec("us", (StreamRef("orders"),), "handlers:us", topic="us.orders"),
            "large": SinkSpec(
                "large", (StreamRef("orders"),), "handlers:flag", matcher="handlers:is_large"
            ),
            "report": SinkSpec(
                "report",
                (StreamRef("enriched"), StreamRef("alerts", start="oldest")),
                "handlers:report",
                consumers=2,
            ),
            "dead": SinkSpec("dead", (StreamRef("orders-dlq"),), "handlers:log_dead"),
        },
    )


def replace_sink(topology: Topology, name: str, **changes: Any) -> Topology:
    sinks = dict(topology.sinks)
    sinks[name] = dataclasses.replace(sinks[name], **changes)
    return dataclasses.replace(topology, sinks=sinks)


def without(topology: Topology, section: str, name: str) -> Topology:
    items = {k: v for k, v in getattr(topology, section).items() if k != name}
    return dataclasses.replace(topology, **{section: items})


def with_item(topology: Topology, section: str, item: Any) -> Topology:
    items = dict(getattr(topology, section))
    items[item.name] = item
    return dataclasses.replace(topology, **{section: items})
