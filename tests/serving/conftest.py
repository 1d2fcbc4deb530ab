"""A tiny trained run, exported once, served by `transferkit serve` (or a real TF Serving).

Set TRANSFERKIT_TFS_GRPC=host:port (and TRANSFERKIT_TFS_REST=http://host:port)
to run the client tests against a real TensorFlow Serving instead: the tests
export into TRANSFERKIT_TFS_MODEL_BASE, which that server must watch (for
example with a models.config listing `shapes` under that folder).
"""

import os
import time
from pathlib import Path

import pytest

from transferkit.config import build_run_config
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.runner import train
from transferkit.serving.export import export_run

MODEL = "shapes"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    images = make_image_folder(root / "images", per_class=6, size=32)
    config = build_run_config(tiny_config(images, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 2, "learning_rate": 1e-2}]))
    return train(config, root / "run")


@pytest.fixture(scope="session")
def sample_images(trained_run):
    import json

    info = json.loads((Path(trained_run) / "info.json").read_text())
    return [Path(p).read_bytes() for p in info["examples"][:4]]


@pytest.fixture(scope="session")
def model_base(trained_run, tmp_path_factory):
    base = Path(os.environ.get("TRANSFERKIT_TFS_MODEL_BASE") or tmp_path_factory.mktemp("models"))
    export_run(trained_run, base, MODEL, force=True, version=1)
    return base


class Endpoints:
    def __init__(self, grpc_address, rest_address, server=None):
        self.grpc_address, self.rest_address, self.server = grpc_address, rest_address, server


@pytest.fixture(scope="session")
def served(model_base):
    """gRPC and REST addresses of a server with the `shapes` model."""
    external = os.environ.get("TRANSFERKIT_TFS_GRPC")
    if external:
        from transferkit.serving.client import GrpcClient

        with GrpcClient(external) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if any(s["state"] == "AVAILABLE" for s in client.status(MODEL)):
                        break
                except Exception:
                    pass
                time.sleep(1)
        yield Endpoints(external, os.environ.get("TRANSFERKIT_TFS_REST"))
        return
    from transferkit.serving.server import EmbeddedServer

    server = EmbeddedServer(model_base, grpc_port=0, rest_port=0, poll_seconds=0.2,
                            max_message_bytes=4 * 1024 * 1024).start()
    yield Endpoints(server.grpc_address, server.rest_address, server)
    server.stop()
