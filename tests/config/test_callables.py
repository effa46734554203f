"""``module:attribute`` imports: one path for validation and for the runtime's hot reload."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from topology.callables import CallableImportError, Origins, import_callable


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


# -- a deployment's rule: only the operator's modules ---------------------------------


def test_a_deployment_refuses_a_module_outside_the_handlers_folder_without_importing_it(
    tmp_path: Path, clean_modules: None
) -> None:
    ran = tmp_path / "ran.txt"
    elsewhere = _module(
        tmp_path / "site", "ptest_elsewhere", f"open({str(ran)!r}, 'w')\ndef f(e): ...\n"
    )
    sys.path.insert(0, str(elsewhere))  # importable, as site-packages would be
    handlers = _module(tmp_path / "app", "ptest_mine", "def f(e):\n    return 'mine'\n")
    origins = Origins(folder=handlers)
    for ref in ("os:getpid", "json:dumps", "pdb:set_trace", "ptest_elsewhere:f"):
        with pytest.raises(CallableImportError) as info:
            import_callable(ref, handlers, origins=origins)
        module = ref.split(":")[0]
        assert str(info.value) == (
            f"module {module!r} is outside the handlers folder {handlers.resolve()}: a deployment"
            f" runs only the operator's handlers (allow it with --allow-module {module})"
        )
    assert not ran.exists()  # refused before import: its top-level code never ran
    assert import_callable("ptest_mine:f", handlers, origins=origins)(None) == "mine"


def test_packages_under_the_handlers_folder_and_allowed_prefixes_are_accepted(
    tmp_path: Path, clean_modules: None
) -> None:
    handlers = tmp_path / "app"
    _module(handlers / "ptest_pkg", "__init__", "")
    _module(handlers / "ptest_pkg", "sinks", "def f(e):\n    return 'sub'\n")
    origins = Origins(folder=handlers, allow=("os.path",))
    assert import_callable("ptest_pkg.sinks:f", handlers, origins=origins)(None) == "sub"
    assert import_callable("os.path:join", handlers, origins=origins)("a", "b") == "a/b"
    with pytest.raises(CallableImportError, match="outside the handlers folder"):
        import_callable("os:getcwd", handlers, origins=origins)  # "os.path" does not allow "os"
    with pytest.raises(CallableImportError, match="outside the handlers folder"):
        import_callable("os.pathx:f", handlers, origins=origins)  # a prefix ends at a dot


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("ptest_walk:os.system", "'ptest_walk:os' is the module 'os', reached through another"),
        ("ptest_walk:getpid", "'ptest_walk:getpid' is defined in module 'posix', outside"),
        ("ptest_walk:dumps", "'ptest_walk:dumps' is defined in module 'json', outside"),
        ("ptest_walk:f.__globals__", "'ptest_walk:f.__globals__': a deployment may not name"),
    ],
)
def test_a_deployment_cannot_walk_out_of_a_handler_module(
    tmp_path: Path, clean_modules: None, ref: str, message: str
) -> None:
    body = "import os\nfrom os import getpid\nfrom json import dumps\ndef f(e): ...\n"
    handlers = _module(tmp_path / "app", "ptest_walk", body)
    with pytest.raises(CallableImportError) as info:
        import_callable(ref, handlers, origins=Origins(folder=handlers))
    assert str(info.value).startswith(message)
    # A config file the user wrote keeps today's rule: anything importable.
    assert callable(import_callable(ref.replace(".__globals__", ""), handlers))


def test_a_handler_module_own_functions_classes_and_instances_pass(
    tmp_path: Path, clean_modules: None
) -> None:
    body = (
        "import functools\n"
        "class H:\n    @staticmethod\n    def run(e):\n        return 'static'\n"
        "def g(e, tag):\n    return tag\n"
        "tagged = functools.partial(g, tag='partial')\n"
    )
    handlers = _module(tmp_path / "app", "ptest_own", body)
    origins = Origins(folder=handlers)
    assert import_callable("ptest_own:H.run", handlers, origins=origins)(None) == "static"
    assert import_callable("ptest_own:tagged", handlers, origins=origins)(None) == "partial"


def test_a_library_below_the_handlers_folder_is_not_one_of_its_modules(
    tmp_path: Path, clean_modules: None
) -> None:
    # As the standard library is below "/": a file below the folder, imported through
    # another sys.path entry, is not a handler module of the folder.
    handlers = _module(tmp_path / "app", "ptest_wide", "from ptest_lib import f\n")
    vendor = _module(handlers / "vendor", "ptest_lib", "def f(e):\n    return 'lib'\n")
    sys.path.insert(0, str(vendor))
    with pytest.raises(CallableImportError, match="is defined in module 'ptest_lib', outside"):
        import_callable("ptest_wide:f", handlers, origins=Origins(folder=handlers))
