"""The bot's side of the execution seam imports no model stack: torch is for the workers alone.

Each module is imported in a fresh interpreter, so nothing an earlier test imported hides
an import that pulls torch in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: What must stay out of the bot's process until a backend that runs the model is started.
MODEL_STACK = ("torch", "transformers")

TORCH_FREE = (
    "bot.execution.base",
    "bot.execution.backend",
    "bot.execution.scheduler",
    "bot.execution.factory",
    "bot.execution.local.pool",  # a single worker loads its own model; several share the parent's, loaded in open()
    "bot.telegram.pipeline",
    "bot.telegram.handlers",
    "bot.app",
)


def imported_after(module: str) -> list[str]:
    """The model-stack packages in `sys.modules` after importing `module` in a fresh interpreter."""
    script = (
        f"import json, sys, {module}\n"
        f"print(json.dumps([name for name in {list(MODEL_STACK)!r} if name in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_bot_side_imports_no_model_stack(module: str) -> None:
    assert imported_after(module) == []


def test_the_engine_does_import_it() -> None:
    """The check above can see torch: the module that runs the model does import it."""
    assert imported_after("bot.execution.engine") == list(MODEL_STACK)
