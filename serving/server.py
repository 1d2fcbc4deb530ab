"""`transferkit serve`: an embedded server with TF Serving's gRPC and REST APIs.

The real `tensorflow_model_server` cannot be installed on our machines, so
this serves the same contract on `tf.saved_model.load`: every model under a
base folder (or in a `models.config`), the latest version by default, new
versions picked up while serving, warmup replayed before a version is
AVAILABLE, TF Serving's status codes and messages, optional server-side
batching and TLS, and a graceful stop that finishes in-flight requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import threading
from pathlib import Path

import grpc

from transferkit.errors import TransferkitError
from transferkit.serving.model_manager import DEFAULT_MAX_REQUEST_BATCH, BatchingOptions, ModelManager, ModelSource
from transferkit.serving.saved_models import list_versions

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """Server certificate and key; a client CA turns on mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def check(self) -> None:
        """Raises TransferkitError naming the file when a TLS file is missing or the key does not match the cert."""
        import ssl

        for flag, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-client-ca", self.client_ca)):
            if path is not None and not Path(path).is_file():
                raise TransferkitError(f"{flag} {path}: file not found")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(str(self.cert), str(self.key))
        except ssl.SSLError as error:
            raise TransferkitError(f"--tls-cert {self.cert} / --tls-key {self.key}: not a matching PEM certificate "
                                   f"and private key ({error.reason or error})") from None
        if self.client_ca:
            try:
                context.load_verify_locations(str(self.client_ca))
            except ssl.SSLError as error:
                raise TransferkitError(f"--tls-client-ca {self.client_ca}: not a PEM certificate "
                                       f"({error.reason or error})") from None

    def grpc_credentials(self):
        root = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())],
                                           root_certificates=root, require_client_auth=root is not None)

    def ssl_context(self):
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert), str(self.key))
        if self.client_ca:
            context.load_verify_locations(str(self.client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def sources_from_base(model_base: str | Path) -> list[ModelSource]:
    """Every model folder under `model_base`, or the entries of a models.config file."""
    path = Path(model_base)
    if path.is_file():
        return sources_from_config(path)
    if not path.is_dir():
        raise TransferkitError(f"{path}: model base not found; expected a folder of <name>/<version>/ SavedModels "
                               f"or a models.config file")
    sources = [ModelSource(p.name, p.resolve()) for p in sorted(path.iterdir())
               if p.is_dir() and not p.name.startswith(".") and list_versions(p)]
    if not sources:
        raise TransferkitError(f"{path}: no models found (expected {path}/<name>/<version>/saved_model.pb); "
                               f"export one with `transferkit export`")
    return sources


def sources_from_config(path: Path) -> list[ModelSource]:
    from transferkit.serving.config_files import read_model_config

    try:
        config = read_model_config(path)
    except ValueError as error:
        raise TransferkitError(str(error)) from None
    sources = []
    for entry in config.model_config_list.config:
        base = Path(entry.base_path)
        if not base.is_absolute():
            base = (path.parent / base).resolve()
        policy = entry.model_version_policy.WhichOneof("policy_choice") or "latest"
        latest = entry.model_version_policy.latest.num_versions or 1
        specific = tuple(entry.model_version_policy.specific.versions)
        sources.append(ModelSource(entry.name, base, policy, latest, specific, dict(entry.version_labels)))
    if not sources:
        raise TransferkitError(f"{path}: model_config_list has no models")
    return sources


class EmbeddedServer:
    """gRPC + REST servers over one ModelManager.

    Example:

    ```python
    server = EmbeddedServer("models/", grpc_port=0, rest_port=0).start()
    print(server.grpc_address, server.rest_address)
    server.stop()
    ```
    """

    def __init__(self, model_base: str | Path, host: str = "127.0.0.1", grpc_port: int = 8500,
                 rest_port: int | None = 8501, batching: BatchingOptions | None = None, tls: TlsFiles | None = None,
                 poll_seconds: float = 1.0, max_message_bytes: int = 64 * 1024 * 1024,
                 max_request_batch: int = DEFAULT_MAX_REQUEST_BATCH):
        self.manager = ModelManager(sources_from_base(model_base), batching=batching, poll_seconds=poll_seconds,
                                    max_request_batch=max_request_batch)
        self.host = host
        self.tls = tls
        self._grpc_port_wanted = grpc_port
        self._rest_port_wanted = rest_port
        self.max_message_bytes = max_message_bytes
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc_server = None
        self._rest_loop: asyncio.AbstractEventLoop | None = None
        self._rest_runner = None
        self._rest_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._done = threading.Event()

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_address(self) -> str | None:
        if self.rest_port is None:
            return None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.rest_port}"

    def start(self) -> "EmbeddedServer":
        if self.tls:
            self.tls.check()
        self.manager.start()
        from transferkit.serving.grpc_server import build_grpc_server  # TensorFlow Serving's protos, TensorFlow

        credentials = self.tls.grpc_credentials() if self.tls else None
        self._grpc_server, self.grpc_port = build_grpc_server(
            self.manager, f"{self.host}:{self._grpc_port_wanted}", max_message_bytes=self.max_message_bytes,
            credentials=credentials)
        self._grpc_server.start()
        if self._rest_port_wanted is not None:
            self._start_rest()
        logger.info("serving gRPC on %s, REST on %s", self.grpc_address, self.rest_address)
        return self

    def _start_rest(self) -> None:
        from aiohttp import web

        from transferkit.serving.rest_server import RestApp

        ready = threading.Event()
        failure: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._rest_loop = loop
            asyncio.set_event_loop(loop)
            try:
                app = RestApp(self.manager, max_body_bytes=self.max_message_bytes)
                self._rest_runner = web.AppRunner(app.app, handle_signals=False, shutdown_timeout=10)
                loop.run_until_complete(self._rest_runner.setup())
                site = web.TCPSite(self._rest_runner, self.host, self._rest_port_wanted,
                                   ssl_context=self.tls.ssl_context() if self.tls else None)
                loop.run_until_complete(site.start())
                self.rest_port = self._rest_runner.addresses[0][1]
            except BaseException as error:  # reported to start()
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._rest_thread = threading.Thread(target=run, name="rest", daemon=True)
        self._rest_thread.start()
        ready.wait(timeout=30)
        if failure:
            # Nothing half-started stays behind: the gRPC side and the model manager stop too.
            self._grpc_server.stop(0)
            self.manager.stop()
            error = failure[0]
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise TransferkitError(f"REST port {self.host}:{self._rest_port_wanted}: cannot start ({reason}); "
                                   f"choose another --rest-port")

    def stop(self, grace: float = 10.0) -> None:
        """Stops accepting requests and lets in-flight ones finish (up to `grace` seconds)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait()
        if self._rest_loop is not None and self._rest_runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._rest_runner.cleanup(), self._rest_loop)
            try:
                future.result(timeout=grace + 5)
            finally:
                self._rest_loop.call_soon_threadsafe(self._rest_loop.stop)
                if self._rest_thread:
                    self._rest_thread.join(timeout=5)
        self.manager.stop()
        self._done.set()

    def wait(self) -> None:
        """Blocks until SIGTERM or SIGINT, then stops gracefully."""
        def handler(signum, frame):
            logger.info("signal %d: shutting down", signum)
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        while not self._done.wait(0.5):
            pass
