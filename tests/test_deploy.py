"""Static checks of the deployment files: they cannot be built or started in the test suite,
but their mistakes that matter (an unpinned base, root at run time, a second dependency list,
a torch version that drifted from the Makefile's, a unit systemd would reject) are visible
in the text."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]
UNIT = DEPLOY / "voicebot.service"


def _makefile_var(name: str) -> str:
    match = re.search(rf"^{name}\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"Makefile has no {name}"
    return match.group(1)


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(head.upper(), rest.strip()) for head, _, rest in (line.partition(" ") for line in logical)]


def _args(dockerfile: Path) -> dict[str, str]:
    return dict(
        rest.split("=", 1) for name, rest in _instructions(dockerfile) if name == "ARG" and "=" in rest
    )


def _runs(dockerfile: Path) -> list[str]:
    return [rest for name, rest in _instructions(dockerfile) if name == "RUN"]


# --- Dockerfiles ------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_pinned_by_tag(dockerfile: Path) -> None:
    [base] = [rest for name, rest in _instructions(dockerfile) if name == "FROM"]
    image, _, tag = base.partition(":")
    assert tag and tag != "latest" and re.search(r"\d", tag), base
    if dockerfile.name == "Dockerfile":
        assert base == "python:3.11-slim-bookworm"
    else:
        assert image == "nvidia/cuda" and "runtime" in tag


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_torch_version_matches_the_makefile(dockerfile: Path) -> None:
    assert _args(dockerfile)["TORCH_VERSION"] == _makefile_var("TORCH_VERSION")


def test_cpu_image_uses_the_makefiles_torch_index() -> None:
    assert _args(DEPLOY / "Dockerfile")["TORCH_INDEX"] == _makefile_var("TORCH_INDEX")


def test_cuda_image_uses_a_cuda12_torch_build() -> None:
    index = _args(DEPLOY / "Dockerfile.cuda")["TORCH_INDEX"]
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d", index)
    assert "ASR_DEVICE=cuda" in (DEPLOY / "Dockerfile.cuda").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_torch_first_then_the_package_from_pyproject(dockerfile: Path) -> None:
    installs = [run for run in _runs(dockerfile) if "pip install" in run]
    assert len(installs) == 2, installs
    torch, package = installs
    assert '"torch==${TORCH_VERSION}"' in torch and '--index-url "${TORCH_INDEX}"' in torch
    assert re.search(r"pip install \.( |$)", package), package
    # No second dependency list: nothing but the package itself is named.
    assert not re.search(r"-r\s|requirements|==", package)
    copies = [rest for name, rest in _instructions(dockerfile) if name == "COPY"]
    assert any("pyproject.toml" in copy for copy in copies)
    assert not list(ROOT.glob("requirements*.txt"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_non_root_with_healthcheck_and_volumes(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    users = [rest for name, rest in instructions if name == "USER"]
    assert users and users[-1] not in {"root", "0"}
    [healthcheck] = [rest for name, rest in instructions if name == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "METRICS_PORT" in healthcheck
    text = dockerfile.read_text()
    for setting in ("METRICS_PORT=9090", "METRICS_HOST=0.0.0.0", "HF_HOME=/data/hf"):
        assert setting in text
    assert "DATABASE_PATH=/data/voicebot.sqlite3" in text
    assert ("VOLUME", '["/data"]') in instructions
    assert instructions[-1] == ("CMD", '["python", "-m", "bot", "run"]')


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_bake_model_is_opt_in_and_before_the_volume(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    assert _args(dockerfile)["BAKE_MODEL"] == "0"
    [bake] = [i for i, (name, rest) in enumerate(instructions) if name == "RUN" and "download-model" in rest]
    volume = instructions.index(("VOLUME", '["/data"]'))
    user = max(i for i, (name, _) in enumerate(instructions) if name == "USER")
    # Downloaded as the runtime user (so the cache is writable later), and before VOLUME
    # (changes to a volume path after VOLUME are discarded).
    assert user < bake < volume


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "data/"} <= ignored


@pytest.mark.skipif(not shutil.which("hadolint"), reason="hadolint is not installed")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(["hadolint", str(dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- systemd ----------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_has_the_required_settings() -> None:
    unit = _unit()
    assert unit.sections() == ["Unit", "Service", "Install"]
    service = unit["Service"]
    expected = {
        "ExecStart": "/opt/voicebot/.venv/bin/python -m bot run",
        "WorkingDirectory": "/opt/voicebot",
        "EnvironmentFile": "/opt/voicebot/.env",
        "User": "voicebot",
        "Restart": "on-failure",
        "RestartSec": "5",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "60",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ReadWritePaths": "/opt/voicebot/data /var/cache/voicebot",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert "RestrictAddressFamilies" in service
    # Environment= may repeat; configparser keeps only the last, so look at the lines.
    assert "Environment=HF_HOME=/var/cache/voicebot/hf" in UNIT.read_text().splitlines()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists; point it at this interpreter, keep everything else.
    unit = tmp_path / "voicebot.service"
    unit.write_text(UNIT.read_text().replace("/opt/voicebot/.venv/bin/python", sys.executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    complaints = [line for line in result.stderr.splitlines() if str(unit) in line or "Unknown" in line]
    assert result.returncode == 0 and not complaints, result.stderr


# --- docker compose ---------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(compose, dict)
    return compose


def test_compose_bot_service() -> None:
    bot = _compose()["services"]["bot"]
    assert bot["build"]["context"] == ".." and bot["build"]["dockerfile"] == "deploy/Dockerfile"
    assert bot["build"]["args"] == {"BAKE_MODEL": "${BAKE_MODEL:-0}"}
    assert (DEPLOY / bot["build"]["context"] / bot["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert bot["env_file"] == "../.env"
    assert bot["restart"] == "unless-stopped"
    assert "/healthz" in " ".join(bot["healthcheck"]["test"])
    assert "voicebot-data:/data" in bot["volumes"]
    # .env copied from .env.example has container-wrong values for these; compose must win.
    assert bot["environment"]["DATABASE_PATH"] == "/data/voicebot.sqlite3"
    assert bot["environment"]["METRICS_PORT"] == "9090"


def test_compose_local_bot_api_server() -> None:
    compose = _compose()
    api = compose["services"]["telegram-bot-api"]
    image, _, tag = api["image"].partition(":")
    assert image == "aiogram/telegram-bot-api" and tag and tag != "latest"
    assert api["profiles"] == ["local-api"]
    assert api["environment"]["TELEGRAM_LOCAL"] == "1"
    # Files the server stores are read by the bot at the same absolute path.
    [shared] = [v for v in api["volumes"] if v.endswith(":/var/lib/telegram-bot-api")]
    volume = shared.split(":")[0]
    assert f"{volume}:/var/lib/telegram-bot-api:ro" in compose["services"]["bot"]["volumes"]
    assert volume in compose["volumes"]
    text = (DEPLOY / "docker-compose.yml").read_text()
    for wiring in (
        "TELEGRAM_API_BASE_URL=http://telegram-bot-api:8081/bot",
        "TELEGRAM_FILE_BASE_URL=http://telegram-bot-api:8081/file/bot",
        "TELEGRAM_LOCAL_MODE=true",
        "MAX_FILE_MB=2000",
    ):
        assert wiring in text


# --- cluster (Ray Serve) ------------------------------------------------------------------


def _serve_configs() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    service = yaml.safe_load((DEPLOY / "ray" / "kuberay-rayservice.yaml").read_text())
    assert service["kind"] == "RayService"
    return [yaml.safe_load((DEPLOY / "ray" / "serve_config.yaml").read_text()),
            yaml.safe_load(service["spec"]["serveConfigV2"])]


def test_serve_configs_name_the_application_builder_and_real_settings() -> None:
    import importlib

    from bot.settings import Settings

    for config in _serve_configs():
        (app,) = config["applications"]
        module, _, name = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), name))
        unknown = set(app["args"]) - set(Settings.model_fields)
        assert not unknown, f"serve config args that are no setting: {unknown}"


def test_cluster_compose_gives_ray_shm_and_points_the_bot_at_the_head() -> None:
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((DEPLOY / "docker-compose.cluster.yml").read_text())["services"]
    for name in ("ray-head", "ray-worker", "ray-gpu-worker"):
        assert services[name]["shm_size"], f"{name}: Ray's object store needs a large /dev/shm"
    bot = services["bot"]["environment"]
    assert bot["ASR_BACKEND"] == "ray" and bot["ASR_SERVER_URL"].endswith(":8000")
    assert "python -m bot serve" in services["ray-head"]["command"]
