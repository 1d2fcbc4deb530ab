"""TF Serving configuration written next to exported models.

- `models.config`: a `model_config_list` with host paths, for a local
  `tensorflow_model_server --model_config_file` or `transferkit serve`;
  updated in place, one entry per model name.
- `models.docker.config`: the same with `/models/<name>` paths, for the
  container examples, which mount the base folder at `/models`.
- `batching_parameters.txt`, `monitoring.config`, `docker-compose.yml`,
  `kubernetes.yaml`: examples running the official `tensorflow/serving` image.
"""

from __future__ import annotations

from pathlib import Path

from transferkit.config import atomic_write_text

BATCHING_HEADER = """\
# Server-side batching, read by tensorflow_model_server --enable_batching
# --batching_parameters_file=batching_parameters.txt and by transferkit serve --batching.
# Written for this machine's CPUs once; an edited copy is kept by later exports.
# For throughput, send from about 2 x max_batch_size x num_batch_threads concurrent clients.
"""


def batching_parameters_text(options=None) -> str:
    return BATCHING_HEADER + (options or recommended_batching()).to_text_proto()


def recommended_batching():
    """The batching `export` writes: measured on 2 cores (docs/serving.md, "Server-side batching", and docs/benchmarks.md, "Serving")."""
    from transferkit.serving.batching import BatchingOptions

    return BatchingOptions(max_batch_size=8, batch_timeout_micros=5000, max_enqueued_batches=100)


def read_batching(base: Path):
    """The base's batching_parameters.txt (ValueError naming it when it does not parse), else the recommended."""
    from transferkit.serving.batching import BATCHING_PARAMETERS_FILE, BatchingOptions

    path = Path(base) / BATCHING_PARAMETERS_FILE
    return BatchingOptions.read(path) if path.is_file() else recommended_batching()


MONITORING = """\
prometheus_config {
  enable: true
  path: "/monitoring/prometheus/metrics"
}
"""

COMPOSE = """\
# docker compose up: serves every model in this folder with TF Serving.
services:
  tensorflow-serving:
    image: tensorflow/serving:2.21.0
    ports:
      - "8500:8500"   # gRPC
      - "8501:8501"   # REST
    volumes:
      - ./:/models:ro
    command:
      - --model_config_file=/models/models.docker.config
      - --model_config_file_poll_wait_seconds=60
      - --enable_batching
      - --batching_parameters_file=/models/batching_parameters.txt
      - --monitoring_config_file=/models/monitoring.config
"""

KUBERNETES = """\
# kubectl apply -f kubernetes.yaml, after copying this folder into the volume
# claimed below (or baking it into an image FROM tensorflow/serving).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: transferkit-serving
spec:
  replicas: 2
  selector:
    matchLabels: {app: transferkit-serving}
  template:
    metadata:
      labels: {app: transferkit-serving}
    spec:
      containers:
        - name: tensorflow-serving
          image: tensorflow/serving:2.21.0
          args:
            - --model_config_file=/models/models.docker.config
            - --model_config_file_poll_wait_seconds=60
            - --enable_batching
            - --batching_parameters_file=/models/batching_parameters.txt
            - --monitoring_config_file=/models/monitoring.config
          ports:
            - {name: grpc, containerPort: 8500}
            - {name: rest, containerPort: 8501}
          readinessProbe:
            tcpSocket: {port: 8500}
            initialDelaySeconds: 10
          volumeMounts:
            - {name: models, mountPath: /models, readOnly: true}
      volumes:
        - name: models
          persistentVolumeClaim: {claimName: transferkit-models}
---
apiVersion: v1
kind: Service
metadata:
  name: transferkit-serving
spec:
  selector: {app: transferkit-serving}
  ports:
    - {name: grpc, port: 8500, targetPort: 8500}
    - {name: rest, port: 8501, targetPort: 8501}
"""


def read_model_config(path: Path):
    """Parses a `models.config` file (ModelServerConfig text format)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if path.exists():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as error:
            raise ValueError(f"{path}: not a valid TF Serving model config: {error}") from None
    return config


def _upsert(path: Path, name: str, base_path: str) -> None:
    from google.protobuf import text_format

    config = read_model_config(path)
    entries = config.model_config_list.config
    for entry in entries:
        if entry.name == name:
            entry.base_path = base_path
            break
    else:
        entry = entries.add()
        entry.name = name
        entry.base_path = base_path
        entry.model_platform = "tensorflow"
    atomic_write_text(path, text_format.MessageToString(config))


def write_serving_config(base: Path, name: str) -> None:
    """Adds or updates `name` in the base's model configs and writes the examples."""
    import fcntl

    base = Path(base)
    # Exports of different models into one base may run at once: one
    # read-modify-write of the model list at a time, or an entry is lost.
    with open(base / ".models.config.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _upsert(base / "models.config", name, str((base / name).resolve()))
        _upsert(base / "models.docker.config", name, f"/models/{name}")
    if not (base / "batching_parameters.txt").exists():  # a tuned copy stays
        atomic_write_text(base / "batching_parameters.txt", batching_parameters_text())
    for filename, text in (("monitoring.config", MONITORING), ("docker-compose.yml", COMPOSE),
                           ("kubernetes.yaml", KUBERNETES)):
        atomic_write_text(base / filename, text)
