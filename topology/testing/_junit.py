"""JUnit XML, the report format CI systems read (one suite per test file)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from topology.config import Problem
from topology.testing._runner import TestResult

__all__ = ["junit_xml"]


def junit_xml(results: Sequence[TestResult], invalid: Sequence[Problem] = ()) -> str:
    """The report: each case a ``testcase``; each invalid file an ``error`` case of its own."""
    suites: dict[str, list[TestResult]] = {}
    for result in results:
        suites.setdefault(result.file, []).append(result)
    root = ET.Element("testsuites", name="ponos-topology test")
    for file, cases in suites.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=file,
            tests=str(len(cases)),
            failures=str(sum(not c.passed for c in cases)),
            errors="0",
            time=f"{sum(c.seconds for c in cases):.3f}",
        )
        for case in cases:
            element = ET.SubElement(
                suite, "testcase", classname=file, name=case.name, time=f"{case.seconds:.3f}"
            )
            if not case.passed:
                failure = ET.SubElement(element, "failure", message=case.diff[0])
                failure.text = "\n".join(case.diff)
    by_file: dict[str, list[Problem]] = {}
    for problem in invalid:
        by_file.setdefault(problem.file, []).append(problem)
    for file, problems in by_file.items():
        suite = ET.SubElement(
            root, "testsuite", name=file, tests="1", failures="0", errors="1", time="0.000"
        )
        element = ET.SubElement(suite, "testcase", classname=file, name="(file)", time="0.000")
        error = ET.SubElement(element, "error", message=str(problems[0]))
        error.text = "\n".join(str(p) for p in problems)
    root.set("tests", str(len(results) + len(by_file)))
    root.set("failures", str(sum(not r.passed for r in results)))
    root.set("errors", str(len(by_file)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
