"""TF Serving warmup records: `assets.extra/tf_serving_warmup_requests`.

A TFRecord file of `PredictionLog` messages that TF Serving (and
`transferkit serve`) replays before a version becomes AVAILABLE, so the first
real request does not pay for graph initialisation. TF Serving reads at most
1000 records.
"""

from __future__ import annotations

from pathlib import Path

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def warmup_path(saved_model_dir: str | Path) -> Path:
    return Path(saved_model_dir) / "assets.extra" / WARMUP_FILE


def predict_request(model_name: str, encoded_images: list[bytes], signature: str = "serving_default",
                    input_key: str = "images"):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    request.inputs[input_key].CopyFrom(tf.make_tensor_proto(encoded_images, dtype=tf.string,
                                                            shape=[len(encoded_images)]))
    return request


def write_warmup_file(saved_model_dir: str | Path, model_name: str, encoded_images: list[bytes]) -> Path:
    """One single-image Predict request per image, at most 1000."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    if len(encoded_images) > MAX_WARMUP_RECORDS:
        raise ValueError(f"write_warmup_file: at most {MAX_WARMUP_RECORDS} records. "
                         f"Received: {len(encoded_images)} images")
    path = warmup_path(saved_model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image in encoded_images:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=predict_request(model_name, [image])))
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
