"""transformers' lazy import table, read back from disk while its source files are unchanged.

`import transformers` builds a table of what each of its model modules exports, for its
lazy modules, by reading and parsing every one of the ~2,600 source files under
`transformers/models` (`define_import_structure`). That is a fifth of the import on a fast
core and more on a slow one, and every model worker, `python -m bot transcribe` and cluster
replica pays it again at start, though the table depends on nothing but those files.

`install()`, called before transformers is first imported, makes that function keep its
tables in a JSON file (in the Hugging Face cache, `HF_HOME`). A table is used only while the
name, size and modification time of every file under its folder are as they were when it
was built (a walk of stat calls: a few milliseconds), so an upgraded or edited transformers
builds it afresh. Anything that goes wrong with the file (missing, unreadable, read-only
cache) leaves transformers to build the table as it always does.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

#: The transformers module that defines `define_import_structure`.
TARGET = "transformers.utils.import_utils"

#: dict[frozenset of backends, dict[module name, set of exported names]], as transformers has it.
ImportStructure = dict[frozenset[str], dict[str, set[str]]]


def default_path() -> Path:
    """Where the tables are kept: beside the models, in the Hugging Face cache."""
    from huggingface_hub.constants import HF_HOME

    return Path(HF_HOME) / "voicebot" / "transformers-import-tables.json"


def folder_fingerprint(folder: str) -> str:
    """A digest of the name, size and modification time of every file under `folder`."""
    digest = hashlib.blake2b(digest_size=16)

    def visit(path: str) -> None:
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name == "__pycache__":
                    continue
                if entry.is_dir():
                    visit(entry.path)
                else:
                    stat = entry.stat()
                    digest.update(f"{entry.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())

    visit(folder)
    return digest.hexdigest()


def encode(structure: ImportStructure) -> list[Any]:
    """The table as JSON values: frozensets and sets become sorted lists."""
    return [[sorted(backends), {name: sorted(objects) for name, objects in modules.items()}] for backends, modules in structure.items()]


def decode(value: list[Any]) -> ImportStructure:
    """The inverse of `encode`."""
    return {frozenset(backends): {name: set(objects) for name, objects in modules.items()} for backends, modules in value}


class TableStore:
    """The tables of one process: read from the file once, written back whenever one is built."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._entries is None:
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                self._entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def cached(self, build: Callable[..., ImportStructure]) -> Callable[..., ImportStructure]:
        """`build` (transformers' `define_import_structure`), answering from the file when it can."""

        @functools.lru_cache
        def define_import_structure(module_path: str | os.PathLike[str], prefix: str | None = None) -> ImportStructure:
            folder = os.fspath(module_path)
            if os.path.isfile(folder):
                folder = os.path.dirname(folder)
            key = f"{prefix}\0{os.fspath(module_path)}"
            try:
                fingerprint = folder_fingerprint(folder)
            except OSError:
                return build(module_path, prefix)
            entry = self._load().get(key)
            if isinstance(entry, dict) and entry.get("fingerprint") == fingerprint:
                try:
                    return decode(entry["table"])
                except (KeyError, TypeError, ValueError):
                    pass
            structure = build(module_path, prefix)
            self._load()[key] = {"fingerprint": fingerprint, "table": encode(structure)}
            self._save()
            return structure

        return define_import_structure

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.path.parent, delete=False, suffix=".tmp") as out:
                json.dump(self._entries, out)
            os.replace(out.name, self.path)
        except OSError as exc:
            log.debug("transformers' import table not saved to %s: %s", self.path, exc)


class _PatchingLoader(importlib.machinery.SourceFileLoader):
    """Loads `transformers.utils.import_utils` as usual, then wraps its `define_import_structure`."""

    store: TableStore

    def exec_module(self, module: ModuleType) -> None:
        super().exec_module(module)
        module.define_import_structure = self.store.cached(module.define_import_structure)  # type: ignore[attr-defined]


class _Finder(importlib.abc.MetaPathFinder):
    """Finds `transformers.utils.import_utils` through the normal path finder, with the patching loader."""

    def __init__(self, store: TableStore) -> None:
        self.store = store

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        loader = _PatchingLoader(fullname, spec.origin)
        loader.store = self.store
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def install(path: Path | None = None) -> None:
    """Serve transformers' import tables from `path` (default: `default_path()`) in this process.

    Does nothing once transformers is imported (its tables are built by then) or when already installed.
    """
    if TARGET in sys.modules or any(isinstance(finder, _Finder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder(TableStore(path or default_path())))
