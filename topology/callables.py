"""The one place that turns ``"module:attribute"`` strings into callables.

Validation and the runtime both go through :func:`import_callable` so that a
config that validates is a config that runs, and the hot reload (``reload=True``)
re-reads handler code exactly the way the first start read it.

The config file's folder is importable. Two configs in different folders may
both have a ``handlers.py``: a module already imported from another folder is
dropped from ``sys.modules`` and imported again from this config's folder,
rather than silently handing back the other folder's functions.

:class:`Origins` says which modules a config may name. A config file on disk
was written by whoever runs it, so its callables may come from anywhere
importable. A deployment's text comes from Redis, which more people can write
than can install code on the workers (a shared cache, a leaked password): its
callables must be the operator's own — modules under the handlers folder, or
under a prefix the operator allowed — checked *before* anything is imported, so
naming ``os:abort`` or ``pdb:set_trace`` runs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from difflib import get_close_matches
from importlib.machinery import PathFinder
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "REF_PATTERN",
    "CallableImportError",
    "Origins",
    "code_fingerprints",
    "import_callable",
    "module_file",
]

#: What a reference looks like; the JSON Schema carries the same pattern.
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
REF_PATTERN = f"^{_DOTTED}:{_DOTTED}$"
_REF = re.compile(REF_PATTERN)


class CallableImportError(Exception):
    """A reference that does not name a callable; the message says why, in one line."""


def _under(path: str | None, folder: Path) -> bool:
    if not path:
        return False
    try:
        return Path(path).resolve().is_relative_to(folder)
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Origins:
    """Which modules a config's callables may come from.

    ``Origins()`` (or no origins at all) is the rule of a config file: anywhere.
    With ``folder`` set (a deployment's ``--handlers-dir``), only modules found
    under it or named by an ``allow`` prefix (``--allow-module``); nothing else
    is even imported. ``warn_stdlib`` (``validate --strict``) flags callables
    from the standard library, which a deployment would refuse.
    """

    folder: Path | None = None
    allow: tuple[str, ...] = ()
    warn_stdlib: bool = False

    def __post_init__(self) -> None:
        if self.folder is not None:
            object.__setattr__(self, "folder", Path(self.folder).resolve())

    def allowed_by_prefix(self, module_name: str) -> bool:
        """True when the operator allowed ``module_name`` by name (``--allow-module``)."""
        return any(module_name == p or module_name.startswith(p + ".") for p in self.allow)

    def _outside(self, module_name: str) -> str:
        top = module_name.split(".", 1)[0]
        return (
            f"module {module_name!r} is outside the handlers folder {self.folder}: a deployment"
            f" runs only the operator's handlers (allow it with --allow-module {top})"
        )

    def refuse_module(self, module_name: str) -> str | None:
        """Why ``module_name`` may not be imported here, or None; decided without importing it."""
        if self.folder is None or self.allowed_by_prefix(module_name):
            return None
        try:
            spec = PathFinder.find_spec(module_name.split(".", 1)[0], [str(self.folder)])
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            places: list[str | None] = list(spec.submodule_search_locations or ())
            if all(_under(place, self.folder) for place in places or [spec.origin]):
                return None
        return self._outside(module_name)

    def refuse_loaded(self, module: ModuleType, name: str | None = None) -> str | None:
        """Why an imported module is not the operator's (a name that resolved elsewhere).

        ``name`` is the one the config used (``os.path`` is ``posixpath`` once loaded).
        """
        if self.folder is None or self.allowed_by_prefix(name or module.__name__):
            return None
        spec = getattr(module, "__spec__", None)
        places: list[str | None] = list(getattr(spec, "submodule_search_locations", None) or ())
        if all(_under(p, self.folder) for p in places or [getattr(module, "__file__", None)]):
            return None
        return self._outside(name or module.__name__)

    def refuse_step(self, walked: str, part: str, value: Any, *, allowed: bool) -> str | None:
        """Why the attribute walk may not reach ``walked`` (its last step ``part``, ``value``).

        ``handlers:os.system`` starts in the operator's module and walks into
        another one; dunder attributes reach interpreter internals; a function
        or class merely imported into a handler module (``from os import
        system``) is not the operator's code either — unless the walk started in
        a module the operator ``allowed`` by name: what it exposes is trusted.
        """
        if self.folder is None:
            return None
        if part.startswith("__"):
            return f"{walked!r}: a deployment may not name dunder attributes"
        if isinstance(value, ModuleType):
            return f"{walked!r} is the module {value.__name__!r}, reached through another module"
        if allowed:
            return None
        if inspect.isfunction(value) or inspect.isbuiltin(value) or inspect.isclass(value):
            home = getattr(value, "__module__", None)
            loaded = sys.modules.get(home) if isinstance(home, str) else None
            # Found directly in the folder (not merely somewhere below it, as the
            # standard library is below "/"), and loaded from there.
            if (
                loaded is None
                or self.refuse_module(loaded.__name__) is not None
                or self.refuse_loaded(loaded) is not None
            ):
                return (
                    f"{walked!r} is defined in module {home!r}, outside the handlers"
                    f" folder {self.folder} (allow it with --allow-module {home})"
                )
        return None

    def warning(self, module_name: str) -> str | None:
        """A warning for a callable a deployment would refuse (``validate --strict``)."""
        top = module_name.split(".", 1)[0]
        if self.warn_stdlib and top in sys.stdlib_module_names:
            return (
                f"module {module_name!r} is from the standard library, not a handler module:"
                " run --deployment refuses it unless allowed with --allow-module"
            )
        return None


def _same_file(module: ModuleType, origin: str | None) -> bool:
    current = getattr(module, "__file__", None)
    if current is None or origin is None:
        return False
    try:
        return Path(current).resolve() == Path(origin).resolve()
    except OSError:
        return False


def _forget(top: str) -> None:
    """Drop ``top`` and its submodules so the next import reads them from disk again."""
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def _drop_bytecode(module: ModuleType) -> None:
    # A .pyc is trusted when the source's mtime (whole seconds) and size match: an
    # edit within the same second that keeps the size would reload stale code.
    origin = getattr(module, "__file__", None)
    if not origin or not origin.endswith(".py"):
        return
    with contextlib.suppress(OSError, ValueError, NotImplementedError):
        Path(importlib.util.cache_from_source(origin)).unlink(missing_ok=True)


#: (mtime_ns, size) of each module's file when this module last imported it.
_stamps: dict[str, tuple[int, int]] = {}


def _stamp(module: ModuleType) -> tuple[int, int] | None:
    try:
        st = os.stat(module.__file__ or "")
    except (OSError, TypeError):
        return None
    return (st.st_mtime_ns, st.st_size)


def _import_module(module_name: str, base_dir: Path | None, reload: bool) -> ModuleType:
    module = _find_or_import(module_name, base_dir, reload)
    stamp = _stamp(module)
    if stamp is not None:
        _stamps[module_name] = stamp
    return module


def _find_or_import(module_name: str, base_dir: Path | None, reload: bool) -> ModuleType:
    top = module_name.split(".", 1)[0]
    if base_dir is not None:
        folder = str(Path(base_dir).resolve())
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)  # this config's folder wins over another config's
        importlib.invalidate_caches()
        spec = PathFinder.find_spec(top, [folder])
        loaded = sys.modules.get(top)
        if spec is not None and loaded is not None and not _same_file(loaded, spec.origin):
            _forget(top)
    existing = sys.modules.get(module_name)
    if existing is not None and module_name in _stamps and _stamp(existing) != _stamps[module_name]:
        # Edited since we imported it: validating a reloaded config against the
        # old code would reject a handler the file now defines.
        reload = True
    if reload:
        importlib.invalidate_caches()
        if existing is not None:
            _drop_bytecode(existing)
            return importlib.reload(existing)
    return importlib.import_module(module_name)


def import_callable(
    ref: str, base_dir: Path | None, *, reload: bool = False, origins: Origins | None = None
) -> Callable[..., Any]:
    """The callable ``ref`` (``"package.module:attr.sub"``) names.

    ``base_dir`` (the config file's folder) is put first on ``sys.path``.
    ``reload=True`` re-executes the module (hot reload picks up edited handlers).
    ``origins`` restricts where it may come from (a deployment's rule): a module
    it refuses is not imported at all.
    Raises :class:`CallableImportError` with the underlying message — never lets
    an exception from the user's module escape as a traceback.
    """
    if not isinstance(ref, str) or not _REF.match(ref):
        raise CallableImportError(f"{ref!r} is not a 'module:attribute' reference")
    origins = origins or Origins()
    module_name, attr_path = ref.split(":", 1)
    refusal = origins.refuse_module(module_name)
    if refusal is not None:
        raise CallableImportError(refusal)
    try:
        module = _import_module(module_name, base_dir, reload)
    except ImportError as exc:
        raise CallableImportError(f"cannot import module {module_name!r}: {exc}") from None
    except SyntaxError as exc:
        where = f" ({Path(exc.filename).name}, line {exc.lineno})" if exc.filename else ""
        raise CallableImportError(
            f"cannot import module {module_name!r}: SyntaxError: {exc.msg}{where}"
        ) from None
    except (Exception, SystemExit) as exc:  # user code: anything may go wrong at import
        raise CallableImportError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    refusal = origins.refuse_loaded(module, module_name)
    if refusal is not None:
        raise CallableImportError(refusal)
    target = _walk(module, module_name, attr_path, origins)
    if not callable(target):
        raise CallableImportError(
            f"{ref!r} is not callable (it is of type {type(target).__name__})"
        )
    return target


def _walk(module: ModuleType, module_name: str, attr_path: str, origins: Origins) -> Any:
    """``module``'s attribute ``attr_path`` (dotted), each step checked by ``origins``."""
    target: Any = module
    walked = module_name
    allowed = origins.allowed_by_prefix(module_name)
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            names = [n for n in dir(target) if not n.startswith("_")]
            close = get_close_matches(part, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CallableImportError(f"{walked!r} has no attribute {part!r}{hint}") from None
        except Exception as exc:  # a property or module __getattr__ that raises
            raise CallableImportError(
                f"cannot get {part!r} from {walked!r}: {type(exc).__name__}: {exc}"
            ) from None
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
        refusal = origins.refuse_step(walked, part, target, allowed=allowed)
        if refusal is not None:
            raise CallableImportError(refusal)
    return target


def module_file(module_name: str) -> Path | None:
    """The source file of an imported module (None when not imported or not from a file)."""
    module = sys.modules.get(module_name)
    origin = getattr(module, "__file__", None)
    return Path(origin).absolute() if isinstance(origin, str) else None


def code_fingerprints(refs: Iterable[str]) -> dict[str, str]:
    """sha256 of the file of each already imported module that ``refs`` name.

    Only the named module's own file: a helper module it imports is not
    followed (editing one needs a change of the named module, or a restart).
    """
    out: dict[str, str] = {}
    for ref in refs:
        name = ref.split(":", 1)[0]
        path = module_file(name)
        if name in out or path is None:
            continue
        with contextlib.suppress(OSError):
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
