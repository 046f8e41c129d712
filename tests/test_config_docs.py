"""The Settings class, `.env.example` and the README table describe the same configuration.

A setting added to the class but not to the docs (or a default changed in one place only)
is a lie to whoever deploys the bot; `python deploy/config_table.py` regenerates both.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FIX = "run `python deploy/config_table.py` to regenerate"


def _load_config_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_table", ROOT / "deploy" / "config_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


config_table = _load_config_table()


def _env_example() -> dict[str, tuple[str, str]]:
    """NAME -> (value, the comment line just above it)."""
    entries: dict[str, tuple[str, str]] = {}
    comment = ""
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            comment = line.lstrip("#").strip()
        elif "=" in line:
            name, value = line.split("=", 1)
            assert name not in entries, f".env.example sets {name} twice"
            entries[name.strip()] = (value.strip(), comment)
            comment = ""
    return entries


def _readme_table() -> dict[str, tuple[str, str]]:
    """NAME -> (default, description) from the rows between the config-table markers."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(config_table.TABLE_START, 1)[1].split(config_table.TABLE_END, 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in block.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        name, default, description = (cell.strip("`") for cell in cells)
        rows[name] = (default, description.replace(r"\|", "|"))
    return rows


def test_every_field_is_documented_in_the_class() -> None:
    assert all(info.description for info in Settings.model_fields.values())


def test_env_example_matches_settings() -> None:
    expected = config_table.settings_fields()
    actual = _env_example()
    assert actual.keys() == expected.keys(), FIX
    for name, (default, description) in expected.items():
        assert actual[name] == (default, description), f"{name} in .env.example: {FIX}"


def test_readme_table_matches_settings() -> None:
    expected = config_table.settings_fields()
    actual = _readme_table()
    assert actual.keys() == expected.keys(), FIX
    for name, (default, description) in expected.items():
        assert actual[name] == (default, description), f"{name} in README.md: {FIX}"


def test_readme_block_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config_table.replace_block(readme, config_table.render_table()) == readme, FIX


def test_env_example_values_load_as_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copying .env.example to .env unchanged must give exactly the built-in defaults."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    from_file = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert from_file == Settings(_env_file=None)  # type: ignore[call-arg]


def test_groups_cover_every_field_once() -> None:
    grouped = [name for _title, names in config_table.groups() for name in names]
    assert sorted(grouped) == sorted(name.upper() for name in Settings.model_fields)
