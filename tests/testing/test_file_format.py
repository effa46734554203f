"""Test files: read into cases, or rejected with every problem located like `validate`'s."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from topology.testing import check_test_file, find_test_files

ROOT = Path(__file__).resolve().parents[2]
SHOP = Path(__file__).with_name("shop") / "shop.yaml"


def write(tmp_path: Path, text: str, name: str = "shop_test.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("CONFIG", str(SHOP)))
    return path


def problems_of(path: Path) -> list[str]:
    test_file, problems = check_test_file(path)
    assert test_file is None
    return [str(p) for p in problems]


def test_the_published_schema_is_a_valid_json_schema() -> None:
    schema = json.loads((ROOT / "schemas" / "topology-test.schema.json").read_text())
    Draft202012Validator.check_schema(schema)


def test_a_valid_file_becomes_cases_with_their_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        config: CONFIG
        tests:
          - name: first
            given:
              orders: [{name: order.created, topic: t, payload: {id: 1}}]
            expect:
              priced: [{name: order.priced, payload_contains: {id: 1}}]
              dlq: []
          - name: second
            ordered: true
            sources: true
            timeout: 1.5s
            state: {price: {k1: {n: 1}}}
            expect:
              tallies: [{payload: "text"}]
        """,
    )
    test_file, problems = check_test_file(path)
    assert problems == () and test_file is not None
    first, second = test_file.tests
    assert first.name == "first" and first.line == 3
    [given] = first.given["orders"]
    assert (given.name, given.topic, given.payload) == ("order.created", "t", {"id": 1})
    [expected] = first.expect["priced"]
    assert expected.payload_contains == {"id": 1} and not expected.has_payload
    assert first.expect["dlq"] == () and not first.ordered and not first.sources
    assert second.ordered and second.sources and second.timeout == 1.5
    assert second.state == {"price": {"k1": {"n": 1}}}
    assert second.expect["tallies"][0].payload == "text"
    assert test_file.topology.name == "shop"


def test_unknown_keys_streams_and_sinks_are_located_with_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        config: CONFIG
        tests:
          - name: a
            givn: {}
            expect:
              ordrs: []
              priced: [{nme: order.priced}]
            state: {prise: {}}
        """,
    )
    assert problems_of(path) == [
        f"{path}:4:5: tests[0].givn: unknown key 'givn' (did you mean 'given'?)",
        f"{path}:6:7: tests[0].expect.ordrs: unknown stream 'ordrs' (did you mean 'orders'?)",
        f"{path}:7:17: tests[0].expect.priced[0].nme: unknown key 'nme' (did you mean 'name'?)",
        f"{path}:8:13: tests[0].state.prise: unknown sink 'prise' (did you mean 'price'?)",
    ]


def test_duplicate_names_and_two_payload_kinds_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        config: CONFIG
        tests:
          - name: same
          - name: same
            expect:
              priced:
                - {payload: {id: 1}, payload_contains: {id: 1}}
        """,
    )
    assert problems_of(path) == [
        f"{path}:4:11: tests[1].name: duplicate test name 'same' (first at line 3)",
        f"{path}:7:30: tests[1].expect.priced[0].payload_contains: "
        "give payload or payload_contains, not both",
    ]


def test_wrong_types_and_missing_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        config: CONFIG
        tests:
          - name: a
            given:
              orders: {name: x}
            ordered: yes please
            timeout: 5 minutes
          - expect: {priced: [{payload_contains: [1]}]}
        """,
    )
    assert problems_of(path) == [
        f"{path}:5:15: tests[0].given.orders: expected a list, got a mapping",
        f"{path}:6:14: tests[0].ordered: expected true or false, got string 'yes please'",
        f"{path}:7:14: tests[0].timeout: invalid duration '5 minutes' "
        "(use e.g. 250ms, 20s, 5m, 24h)",
        f"{path}:8:5: tests[1]: missing required key 'name'",
        f"{path}:8:42: tests[1].expect.priced[0].payload_contains: expected a mapping, got a list",
    ]


def test_a_missing_config_is_located_at_its_name_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text("version: 1\nname: x\n")
    path = write(tmp_path, "config: pipelin.yaml\ntests: [{name: a}]\n")
    assert problems_of(path) == [
        f"{path}:1:9: config: no config file 'pipelin.yaml' here (did you mean 'pipeline.yaml'?)"
    ]


def test_an_invalid_config_reports_its_own_problems(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("version: 1\nname: bad\nsinks:\n  s: {streams: [nope], handler: m:f}\n")
    path = write(tmp_path, "config: bad.yaml\ntests: [{name: a}]\n")
    problems = problems_of(path)
    assert problems and all(p.startswith(f"{config}:") for p in problems)
    assert any("unknown stream 'nope'" in p for p in problems)


def test_invalid_yaml_and_missing_sections(tmp_path: Path) -> None:
    broken = write(tmp_path, "config: CONFIG\ntests: [\n", name="broken_test.yaml")
    [problem] = problems_of(broken)
    assert problem.startswith(f"{broken}:3:1: (root): invalid YAML")
    empty = write(tmp_path, "config: CONFIG\n", name="empty_test.yaml")
    assert problems_of(empty) == [f"{empty}:1:1: (root): missing required key 'tests'"]
    unreadable = tmp_path / "gone_test.yaml"
    assert problems_of(unreadable) == [
        f"{unreadable}:1:1: (file): cannot read: No such file or directory"
    ]


def test_folders_are_searched_recursively_skipping_hidden_ones(tmp_path: Path) -> None:
    for name in ("a_test.yaml", "sub/b_test.yaml", ".ponos-data/c_test.yaml", "d.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    found, problems = find_test_files(
        [tmp_path, tmp_path / "a_test.yaml", tmp_path / "nope", tmp_path / "d.yaml"]
    )
    assert found == [tmp_path / "a_test.yaml", tmp_path / "sub" / "b_test.yaml"]
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'nope'}:1:1: (file): no such file or folder",
        f"{tmp_path / 'd.yaml'}:1:1: (file): not a test file: tests are named *_test.yaml "
        "(e.g. d_test.yaml beside a config)",
    ]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*_test.yaml")), ids=str)
def test_every_example_test_file_is_valid(path: Path) -> None:
    test_file, problems = check_test_file(path)
    assert [str(p) for p in problems] == [] and test_file is not None


def test_defaults_are_pinned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from topology.cli import main
    from topology.testing import DEFAULT_TIMEOUT

    assert DEFAULT_TIMEOUT == 30.0
    with pytest.raises(SystemExit):
        main(["test", "--help"])
    assert "(default 30;" in " ".join(capsys.readouterr().out.split())
    path = write(tmp_path, "config: CONFIG\ntests: [{name: a}]\n")
    test_file, _ = check_test_file(path)
    assert test_file is not None
    [case] = test_file.tests
    assert (case.sources, case.ordered, case.timeout, case.state) == (False, False, None, None)
    assert case.given == {} and case.expect == {}
