"""``module:attribute`` imports: one path for validation and for the runtime's hot reload."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from topology.callables import CallableImportError, import_callable


@pytest.fixture
def clean_modules() -> Iterator[None]:
    """Tests write their own handler modules: leave sys.path/sys.modules as found."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def _module(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(body)
    return folder


def test_imports_from_the_config_folder(tmp_path: Path, clean_modules: None) -> None:
    folder = _module(tmp_path, "ptest_h1", "def enrich(e):\n    return 'enriched'\n")
    assert import_callable("ptest_h1:enrich", folder)(None) == "enriched"


def test_same_module_name_in_two_folders_gives_each_folder_its_own(
    tmp_path: Path, clean_modules: None
) -> None:
    one = _module(tmp_path / "one", "ptest_same", "def f():\n    return 1\n")
    two = _module(tmp_path / "two", "ptest_same", "def f():\n    return 2\n")
    assert import_callable("ptest_same:f", one)() == 1
    assert import_callable("ptest_same:f", two)() == 2
    assert import_callable("ptest_same:f", one)() == 1


def test_reload_picks_up_an_edit_of_the_same_size_within_a_second(
    tmp_path: Path, clean_modules: None
) -> None:
    folder = _module(tmp_path, "ptest_edit", "def f():\n    return 1\n")
    assert import_callable("ptest_edit:f", folder)() == 1
    _module(tmp_path, "ptest_edit", "def f():\n    return 2\n")
    assert import_callable("ptest_edit:f", folder, reload=True)() == 2


def test_an_unchanged_module_is_not_executed_again(tmp_path: Path, clean_modules: None) -> None:
    runs = tmp_path / "runs.txt"
    body = f"open({str(runs)!r}, 'a').write('x')\ndef f():\n    return 1\n"
    folder = _module(tmp_path / "m", "ptest_once", body)
    import_callable("ptest_once:f", folder)
    import_callable("ptest_once:f", folder)
    assert runs.read_text() == "x"


def test_a_handler_added_to_an_imported_module_is_found_without_reload(
    tmp_path: Path, clean_modules: None
) -> None:
    # A hot reload validates the new config before applying it: a function just
    # added to an already imported handler module must be seen by that validation.
    folder = _module(tmp_path, "ptest_grow", "def a(e):\n    return 'a'\n")
    assert import_callable("ptest_grow:a", folder)(None) == "a"
    with open(folder / "ptest_grow.py", "a") as handle:
        handle.write("def b(e):\n    return 'b'\n")
    assert import_callable("ptest_grow:b", folder)(None) == "b"


def test_dotted_attribute_path(tmp_path: Path, clean_modules: None) -> None:
    folder = _module(
        tmp_path, "ptest_cls", "class H:\n    @staticmethod\n    def run():\n        return 'x'\n"
    )
    assert import_callable("ptest_cls:H.run", folder)() == "x"


@pytest.mark.parametrize(
    ("body", "ref", "message"),
    [
        ("x = 1\n", "ptest_e1:x", "'ptest_e1:x' is not callable (it is of type int)"),
        ("def enrich(e): ...\n", "ptest_e2:enrch", "'ptest_e2' has no attribute 'enrch' "
         "(did you mean 'enrich'?)"),
        ("import nonexistent_pkg_xyz\n", "ptest_e3:f", "cannot import module 'ptest_e3': "
         "No module named 'nonexistent_pkg_xyz'"),
        ("def f(:\n", "ptest_e4:f", "cannot import module 'ptest_e4': SyntaxError: "
         "invalid syntax (ptest_e4.py, line 1)"),
        ("raise SystemExit(3)\n", "ptest_e5:f", "cannot import module 'ptest_e5': SystemExit: 3"),
        ("", "ptest_e6", "'ptest_e6' is not a 'module:attribute' reference"),
    ],
)  # fmt: skip
def test_failures_are_one_line_messages(
    tmp_path: Path, clean_modules: None, body: str, ref: str, message: str
) -> None:
    folder = _module(tmp_path, ref.split(":")[0], body)
    with pytest.raises(CallableImportError) as info:
        import_callable(ref, folder)
    assert str(info.value) == message
    assert info.value.__cause__ is None and "\n" not in str(info.value)


def test_stdlib_reference_without_base_dir() -> None:
    assert import_callable("os.path:join", None)("a", "b") == "a/b"
