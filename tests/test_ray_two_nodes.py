"""Two Ray nodes (`ray.cluster_utils.Cluster`), the model replica's node removed mid-job: retried and answered.

The cluster runs in a child process (`tests.ray_two_nodes`), since the pytest process already
holds the session's shared Ray instance; it prints what happened as JSON. The bot side there is
the real `HttpBackend` under the real `Scheduler`. Skipped without the `cluster` extra.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.asr.recognizer import Recognizer
from tests.conftest import REPO, engine_text
from tests.media import looped
from tests.ray_cluster import RAY_GROUP

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(RAY_GROUP)]

#: The one kind of listener Ray Serve 2.60 puts on every interface, whatever the node's IP: each
#: replica's inter-deployment gRPC server (`ray/serve/_private/replica.py` binds "[::]:0").
SERVE_REPLICA = "ray::ServeReplica:"


@pytest.fixture(scope="module")
def four_minutes_ogg(speech_ogg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four minutes of speech: the job is still running when its node goes."""
    path = tmp_path_factory.mktemp("four-minutes") / "four-minutes.ogg"
    looped(speech_ogg, path, 48, "-c:a", "libopus", "-b:a", "12k")
    return path


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def test_a_job_whose_node_is_removed_is_retried_on_the_other_node_and_answered_once(
    tiny_model: Path, recognizer: Recognizer, four_minutes_ogg: Path,
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    child = subprocess.run([sys.executable, "-m", "tests.ray_two_nodes", str(tiny_model), str(four_minutes_ogg)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert child.returncode == 0, child.stderr[-4000:]
    outcome = json.loads(child.stdout.strip().splitlines()[-1])  # Ray may print its own lines before

    assert outcome["text"] == engine_text(recognizer, four_minutes_ogg)
    assert outcome["duration"] > 200
    # The first attempt got as far as a progress report, then its stream broke with the node;
    # the retry ran on the other node and is the one result there ever was.
    assert outcome["reports"] == [["progress", 1], ["lost", 0], ["progress", 2], ["done", 2]], outcome["reports"]
    assert outcome["results_of_attempts"] == [2]
    assert outcome["seconds"]["removed_at"] < outcome["seconds"]["answered_at"]
    assert outcome["nodes_alive"] == 2  # the head and the node that took the replica

    listening = [tuple(listener) for listener in outcome["listening"]]
    assert any(name == "gcs_server" for name, _, _ in listening) and any(name == "raylet" for name, _, _ in listening)
    beyond_loopback = [(name, address, port) for name, address, port in listening if not is_loopback(address)]
    assert all(name.startswith(SERVE_REPLICA) and address == "::" for name, address, _ in beyond_loopback), \
        beyond_loopback
