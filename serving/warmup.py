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


def batch_request(model_name: str, examples: list[dict[str, Any]], signature: str = "serving_default"):
    """A Predict request for a batch of examples (each input stacked along a new first dimension)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for key in examples[0]:
        values = [example[key] for example in examples]
        if isinstance(values[0], (bytes, str)):
            proto = tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)])
        else:
            proto = tf.make_tensor_proto(np.stack([np.asarray(v) for v in values]))
        request.inputs[key].CopyFrom(proto)
    return request


def write_warmup_file(saved_model_dir: str | Path, model_name: str, examples: list[dict[str, Any]],
                      batch_sizes: tuple[int, ...] = ()) -> Path:
    """One single-example Predict request per example ({input name: value}), then one request of each
    of `batch_sizes` (the batches a batching server forms: its first one of a size must not pay the
    set-up), at most 1000 in all."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    batch_sizes = tuple(size for size in batch_sizes if size > 1) if examples else ()
    if len(examples) + len(batch_sizes) > MAX_WARMUP_RECORDS:
        raise ValueError(f"write_warmup_file: at most {MAX_WARMUP_RECORDS} records. "
                         f"Received: {len(examples)} examples and {len(batch_sizes)} batch sizes")
    requests = [predict_request(model_name, example) for example in examples]
    requests += [batch_request(model_name, [examples[i % len(examples)] for i in range(size)])
                 for size in batch_sizes]
    path = warmup_path(saved_model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
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
