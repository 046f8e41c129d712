"""Building and running the Serve application: a gateway deployment in front of the model replicas.

Three ways in, one builder:
- `python -m bot serve` (`serve_forever`): starts or joins Ray, runs the application, blocks
  until SIGTERM/SIGINT;
- `serve deploy deploy/ray/serve_config.yaml` or a KubeRay RayService: the config's
  `import_path: bot.execution.ray.app:build` with `args` (Settings field names -> values),
  on top of the environment the cluster's processes were started with;
- tests and the bench: `deploy(settings, name=..., route_prefix=...)` on a running Ray.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bot.execution.ray.config import ServeConfig
from bot.settings import Settings, load_settings

if TYPE_CHECKING:
    from ray.serve import Application

log = logging.getLogger(__name__)

#: The name `python -m bot serve` gives the application.
APP_NAME = "voicebot"


def build_app(settings: Settings) -> Application:
    """The application: the model deployment with its resources and autoscaling, bound into the gateway."""
    from bot.execution.ray.gateway import Gateway
    from bot.execution.ray.transcriber import Transcriber

    config = ServeConfig.from_settings(settings)
    replicas = Transcriber.options(**config.replica_options()).bind(config)  # type: ignore[attr-defined]
    return Gateway.bind(replicas, config)  # type: ignore[attr-defined]


def build(args: Mapping[str, object]) -> Application:
    """The application builder `serve deploy` calls with the config file's `args` (Settings fields)."""
    return build_app(load_settings(**{key.lower(): value for key, value in args.items()}))


def deploy(settings: Settings, *, name: str = APP_NAME, route_prefix: str = "/") -> None:
    """Run the application on the connected Ray and Serve; returns once its replicas are up."""
    from ray import serve

    serve.run(build_app(settings), name=name, route_prefix=route_prefix, blocking=False)


def serve_forever(settings: Settings, *, host: str, port: int) -> None:
    """`python -m bot serve`: join RAY_ADDRESS or start a local Ray, serve on host:port until SIGTERM/SIGINT."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    address = os.environ.get("RAY_ADDRESS") or None
    # Without RAY_ADDRESS a new Ray is started, this machine's alone: on loopback, in a temporary
    # directory of its own (Ray would otherwise join whatever cluster /tmp/ray last recorded).
    local = address is None
    ray.init(address=address, include_dashboard=False, configure_logging=False,
             _node_ip_address="127.0.0.1" if local else None,
             _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp") if local else None)
    stopping = threading.Event()
    try:
        serve.start(http_options={"host": host, "port": port})
        deploy(settings)  # a signal before this returns ends start-up the default way
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        log.info("serving %s on http://%s:%d/v1/audio/transcriptions", settings.asr_model, host, port)
        stopping.wait()
        log.info("stopping")
    finally:
        if not local:  # a shared cluster: take down only this application
            serve.delete(APP_NAME)
        else:
            serve.shutdown()
        ray.shutdown()
