"""transformers' import tables read back from disk: the same tables, built again whenever a file changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot.ops.import_table import ImportStructure, TableStore, decode, encode, folder_fingerprint

#: Prints what transformers' lazy modules resolve names to, and whether its own scan ran.
PROBE = """
import json, sys
if sys.argv[1] != "-":
    from pathlib import Path
    from bot.ops import import_table
    import_table.install(Path(sys.argv[1]))
import transformers
import transformers.models
from transformers.utils import import_utils
print(json.dumps({
    "top": sorted(transformers._class_to_module.items()),
    "models": sorted(transformers.models._class_to_module.items()),
    "missing": sorted((k, sorted(v)) for k, v in transformers._object_missing_backend.items()),
    "scanned_folders": import_utils.create_import_structure_from_path.cache_info().currsize,
}))
print(transformers.Wav2Vec2ForCTC.__name__, transformers.models.wav2vec2.Wav2Vec2Processor.__name__)
"""


def _probe(table: Path | None) -> tuple[dict[str, Any], str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(table) if table else "-"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    return json.loads(out[0]), out[1]


def test_transformers_resolves_every_name_alike_from_a_built_table_and_from_a_saved_one(tmp_path: Path) -> None:
    table = tmp_path / "cache" / "tables.json"
    plain, plain_names = _probe(None)
    built, built_names = _probe(table)
    assert table.is_file()
    read, read_names = _probe(table)

    assert plain_names == built_names == read_names == "Wav2Vec2ForCTC Wav2Vec2Processor"
    assert plain["scanned_folders"] == built["scanned_folders"]
    assert int(built["scanned_folders"]) > 100  # the scan of every model folder
    assert read["scanned_folders"] == 0  # the saved tables, and no scan
    for part in ("top", "models", "missing"):
        assert plain[part] == built[part] == read[part], part
    assert len(plain["top"]) > 1000


def _package(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "configuration_a.py").write_text('__all__ = ["AConfig"]\n')
    (root / "sub" / "modeling_b.py").write_text('__all__ = ["BModel"]\n')
    return root


class CountingBuild:
    """Stands in for transformers' own scan: the table of a folder, and how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, module_path: str | os.PathLike[str], prefix: str | None = None) -> ImportStructure:
        self.calls += 1
        folder = Path(module_path)
        folder = folder.parent if folder.is_file() else folder
        return {
            frozenset(): {f"{prefix}.{p.stem}": {p.read_text()} for p in sorted(folder.rglob("configuration_*.py"))},
            frozenset({"torch"}): {f"{prefix}.{p.stem}": {p.read_text()} for p in sorted(folder.rglob("modeling_*.py"))},
        }


def test_a_saved_table_is_used_until_a_file_under_its_folder_changes(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    path = tmp_path / "tables.json"
    build = CountingBuild()

    first = TableStore(path).cached(build)(package, "models")
    assert build.calls == 1 and path.is_file()
    again = TableStore(path).cached(build)(package, "models")  # a new process
    assert build.calls == 1 and again == first
    assert all(isinstance(k, frozenset) and all(isinstance(v, set) for v in m.values()) for k, m in again.items())

    (package / "sub" / "modeling_b.py").write_text('__all__ = ["BModel", "BForCTC"]\n')
    edited = TableStore(path).cached(build)(package, "models")
    assert build.calls == 2 and edited != first
    assert edited[frozenset({"torch"})]["models.modeling_b"] == {'__all__ = ["BModel", "BForCTC"]\n'}

    (package / "sub" / "modeling_c.py").write_text('__all__ = ["CModel"]\n')
    added = TableStore(path).cached(build)(package, "models")
    assert build.calls == 3 and "models.modeling_c" in added[frozenset({"torch"})]
    assert TableStore(path).cached(build)(package, "models") == added and build.calls == 3


def test_tables_are_kept_per_folder_and_prefix_and_given_a_file_mean_its_folder(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    path = tmp_path / "tables.json"
    build = CountingBuild()
    define = TableStore(path).cached(build)
    define(package, "models")
    define(str(package / "__init__.py"))
    define(package / "sub", "models.sub")
    assert build.calls == 3
    define = TableStore(path).cached(build)
    define(package, "models")
    define(str(package / "__init__.py"))
    define(package / "sub", "models.sub")
    assert build.calls == 3
    (package / "configuration_a.py").write_text('__all__ = ["AConfig", "AOther"]\n')
    define = TableStore(path).cached(build)
    define(package / "sub", "models.sub")
    assert build.calls == 3  # a change outside a folder leaves its table alone
    define(str(package / "__init__.py"))
    assert build.calls == 4


def test_a_damaged_or_unwritable_table_file_only_means_building_the_table(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    build = CountingBuild()
    expected = build(package, "models")

    damaged = tmp_path / "damaged.json"
    damaged.write_text("{not json")
    assert TableStore(damaged).cached(build)(package, "models") == expected
    assert TableStore(damaged).cached(build)(package, "models") == expected
    assert build.calls == 2  # rebuilt once, then read from the repaired file

    wrong = tmp_path / "wrong.json"
    entry = {"fingerprint": folder_fingerprint(str(package)), "table": 3}
    wrong.write_text(json.dumps({f"models\0{package}": entry, "other": [1]}))
    assert TableStore(wrong).cached(build)(package, "models") == expected
    assert build.calls == 3
    wrong.write_text("[1, 2]")
    assert TableStore(wrong).cached(build)(package, "models") == expected
    assert build.calls == 4

    blocked = tmp_path / "a-file" / "tables.json"
    (tmp_path / "a-file").write_text("")
    assert TableStore(blocked).cached(build)(package, "models") == expected
    assert not blocked.exists()


def test_encoding_round_trips_backends_and_names() -> None:
    structure: ImportStructure = {
        frozenset(): {"models.a.configuration_a": {"AConfig", "ATextConfig"}},
        frozenset({"torch", "vision"}): {"models.b.modeling_b": {"BModel"}},
    }
    assert decode(json.loads(json.dumps(encode(structure)))) == structure
