"""The local Ray cluster and Serve instance every Ray test shares, started once per test session.

tests/conftest.py loads this module as a plugin, so `ray_serve` and `asr_server` are available to
every test module. Without the `cluster` extra they skip the tests that use them. The cluster is small on purpose
(2 CPUs, an 80 MB object store, no dashboard) and listens on 127.0.0.1 only; replicas are
given half a CPU each so that several applications (`RayServe.deploy`) fit beside the default one.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.model_factory import EXACT_COMPUTE_TYPE

#: What every test application runs with unless a test overrides it (`Settings` field names); the
#: chunking is the end-to-end tests' (tests/conftest.py), so a few seconds of speech span several chunks.
TEST_SETTINGS: dict[str, object] = {
    "asr_chunk_seconds": 4.0,
    "asr_stride_seconds": 1.0,
    "asr_replica_cpus": 0.5,
    "asr_device": "cpu",
    "asr_compute_type": EXACT_COMPUTE_TYPE,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RayServe:
    """Serve on 127.0.0.1:`port`; `deploy` adds an application under its own route prefix."""

    port: int
    model: Path
    temp_dir: Path
    deployed: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def deploy(self, name: str, **settings: object) -> str:
        """Run the voicebot application as `name` at /`name` with these settings; its base URL
        (what ASR_SERVER_URL is set to: the endpoint is `<url>/v1/audio/transcriptions`)."""
        from bot.execution.ray.app import deploy
        from bot.settings import load_settings

        deploy(load_settings(**{"asr_model": str(self.model), **TEST_SETTINGS, **settings}), name=name,
               route_prefix=f"/{name}")
        self.deployed.append(name)
        return f"{self.url}/{name}"

    def delete(self, name: str) -> None:
        from ray import serve

        serve.delete(name)
        self.deployed.remove(name)

    def replica_logs(self) -> list[Path]:
        """The Serve replicas' log files (one per replica ever started in this session)."""
        return sorted((self.temp_dir / "session_latest" / "logs" / "serve").glob("replica_*.log"))


@pytest.fixture(scope="session")
def ray_serve(tiny_model: Path) -> Iterator[RayServe]:
    """A local Ray instance (2 CPUs, node IP 127.0.0.1) with Serve's HTTP proxy on a free loopback port."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before Ray is imported: no usage report from tests
    ray = pytest.importorskip("ray")
    from ray import serve

    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, _temp_dir=str(temp_dir),
             _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield RayServe(port=port, model=tiny_model, temp_dir=temp_dir)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def asr_server(ray_serve: RayServe) -> str:
    """The base URL of the default test application (the tiny model, the end-to-end tests' chunking)."""
    return ray_serve.deploy("voicebot")


#: The xdist group (`make test` runs `pytest -n 2 --dist loadgroup`) of every test that runs a Ray cluster:
#: one worker runs them all, so the session's shared instance starts once and no two clusters share the cores.
RAY_GROUP = "ray"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the shared cluster run last, in their order: once started it stays up to the end of
    the session, and even idle (controller, proxy, replicas) it takes about a fifth of a core from
    every test after it. Under xdist they are one group, which its scheduler hands out first (the
    largest), to one worker."""
    items.sort(key=_on_shared_cluster)
    for item in items:
        if _on_shared_cluster(item):
            item.add_marker(pytest.mark.xdist_group(RAY_GROUP))


def _on_shared_cluster(item: pytest.Item) -> bool:
    return "ray_serve" in getattr(item, "fixturenames", ())
