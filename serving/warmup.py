"""TF Serving warmup records: `assets.extra/tf_serving_warmup_requests`.

A TFRecord file of `PredictionLog` messages that TF Serving (and
`transferkit serve`) replays before a version becomes AVAILABLE, so the first
real request does not pay for graph initialisation. TF Serving reads at most
1000 records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def warmup_path(saved_model_dir: str | Path) -> Path:
    return Path(saved_model_dir) / "assets.extra" / WARMUP_FILE


def predict_request(model_name: str, example: dict[str, Any], signature: str = "serving_default"):
    """A Predict request for one example: each input becomes a batch of one."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for key, value in example.items():
        if isinstance(value, (bytes, str)):
            proto = tf.make_tensor_proto([value], dtype=tf.string, shape=[1])
        else:
            array = np.asarray(value)
            proto = tf.make_tensor_proto(array[None], shape=[1, *array.shape])
        request.inputs[key].CopyFrom(proto)
    return request


def write_warmup_file(saved_model_dir: str | Path, model_name: str, examples: list[dict[str, Any]]) -> Path:
    """One single-example Predict request per example ({input name: value}), at most 1000."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    if len(examples) > MAX_WARMUP_RECORDS:
        raise ValueError(f"write_warmup_file: at most {MAX_WARMUP_RECORDS} records. "
                         f"Received: {len(examples)} examples")
    path = warmup_path(saved_model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=predict_request(model_name, example)))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir: str | Path):
    """The PredictRequests recorded in a SavedModel's warmup file (may be empty)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(saved_model_dir)
    if not path.exists():
        return []
    requests = []
    for record in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        if log.WhichOneof("log_type") == "predict_log":
            requests.append(log.predict_log.request)
    return requests
