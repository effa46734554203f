"""The README's handler snippet runs as written: what a user copies must import."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_handlers_snippet_runs_as_written() -> None:
    section = README.read_text().split("## Handlers", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    # dont_inherit: this module's `from __future__ import annotations` would hide a NameError.
    exec(compile(code[1], "README.md", "exec", dont_inherit=True), {})
