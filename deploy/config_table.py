"""Regenerate the README configuration table and `.env.example` from `bot.settings.Settings`.

The Settings class is the single source of truth for names, defaults and descriptions;
this script writes the two documents people actually read, and `tests/test_config_docs.py`
fails when either has drifted. Run from the repository root:

    python deploy/config_table.py
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Running as `python deploy/config_table.py` puts deploy/ first on sys.path, not the root.
sys.path.insert(0, str(ROOT))

from bot.settings import Settings  # noqa: E402 - needs the path above

README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"
TABLE_START = "<!-- config-table:start -->"
TABLE_END = "<!-- config-table:end -->"

_GROUP_HEADING = re.compile(r"^\s*# --- (?P<title>.+?) -+\s*$")
_FIELD_LINE = re.compile(r"^    (?P<name>[a-z_][a-z0-9_]*):")


def env_name(field: str) -> str:
    """The environment variable that sets `field` (pydantic-settings: upper-cased name)."""
    return field.upper()


def render_default(value: object) -> str:
    """A field default written the way it would be written in a .env file."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, frozenset | set | list | tuple):
        return ",".join(str(item) for item in sorted(value))
    return str(value)


def settings_fields() -> dict[str, tuple[str, str]]:
    """Env name -> (default as .env text, description), in class order."""
    fields: dict[str, tuple[str, str]] = {}
    for name, info in Settings.model_fields.items():
        if not info.description:
            raise ValueError(f"Settings.{name} has no description")
        fields[env_name(name)] = (render_default(info.get_default(call_default_factory=True)), info.description)
    return fields


def groups() -> list[tuple[str, list[str]]]:
    """(title, env names) per `# --- Title ---` section of the Settings class source."""
    sections: list[tuple[str, list[str]]] = [("General", [])]
    for line in inspect.getsource(Settings).splitlines():
        if heading := _GROUP_HEADING.match(line):
            sections.append((heading["title"], []))
        elif (field := _FIELD_LINE.match(line)) and field["name"] in Settings.model_fields:
            sections[-1][1].append(env_name(field["name"]))
    return [(title, names) for title, names in sections if names]


def render_table() -> str:
    """The README block: one small table per settings group."""
    fields = settings_fields()
    parts: list[str] = []
    for title, names in groups():
        rows = ["| Variable | Default | Description |", "|---|---|---|"]
        for name in names:
            default, description = fields[name]
            shown = f"`{default}`" if default else ""
            escaped = description.replace("|", r"\|")
            rows.append(f"| `{name}` | {shown} | {escaped} |")
        parts.append(f"### {title}\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def render_env_example() -> str:
    """`.env.example`: every setting as NAME=default under its description, grouped."""
    fields = settings_fields()
    parts = [
        "# voicebot configuration. Copy to .env and set TELEGRAM_BOT_TOKEN; everything else is optional.\n"
        "# Generated from bot/settings.py by `python deploy/config_table.py`.\n"
    ]
    for title, names in groups():
        lines = [f"# === {title} ==="]
        for name in names:
            default, description = fields[name]
            lines += [f"# {description}", f"{name}={default}"]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the config-table markers replaced by `block`."""
    start = text.index(TABLE_START) + len(TABLE_START)
    end = text.index(TABLE_END)
    return f"{text[:start]}\n{block}\n{text[end:]}"


def main() -> None:
    README.write_text(replace_block(README.read_text(encoding="utf-8"), render_table()), encoding="utf-8")
    ENV_EXAMPLE.write_text(render_env_example(), encoding="utf-8")
    print(f"Updated {README.name} and {ENV_EXAMPLE.name}")


if __name__ == "__main__":
    main()
