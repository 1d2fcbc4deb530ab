"""TF Serving's gRPC API (PredictionService, ModelService) over a ModelManager."""

from __future__ import annotations

import logging
import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from transferkit.errors import TransferkitError
from transferkit.serving.errors import ServingError
from transferkit.serving.metrics import PHASES
from transferkit.serving.model_manager import ModelManager, run_predict

logger = logging.getLogger(__name__)


def _spec_version(spec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _abort(context, error: ServingError):
    message = error.message if len(error.message) <= 1024 else error.message[:1024] + "...TRUNCATED"
    context.abort(error.code, message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def Predict(self, request, context):
        started, status = time.perf_counter(), "OK"
        try:
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            version, label = _spec_version(request.model_spec)
            loaded = self.manager.resolve(request.model_spec.name, version, label)
            return run_predict(loaded, request, self.manager.max_request_batch)
        except ServingError as error:
            status = error.code.name
            _abort(context, error)
        except Exception as error:  # a bug or resource error: report it, keep serving
            status = "INTERNAL"
            logger.exception("Predict failed")
            _abort(context, ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"))
        finally:
            self.manager.metrics.record(request.model_spec.name, "predict", "GRPC", status,
                                        time.perf_counter() - started)

    def GetModelMetadata(self, request, context):
        from tensorflow_serving.apis import get_model_metadata_pb2 as metadata_pb2

        try:
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            fields = list(request.metadata_field)
            if not fields:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at "
                                   "least one metadata_field")
            for field in fields:
                if field != "signature_def":
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
            version, label = _spec_version(request.model_spec)
            loaded = self.manager.resolve(request.model_spec.name, version, label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = loaded.name
            response.model_spec.version.value = loaded.version
            signature_map = metadata_pb2.SignatureDefMap()
            for key, value in loaded.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(value)
            response.metadata["signature_def"].Pack(signature_map)
            return response
        except ServingError as error:
            _abort(context, error)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            # Like TF Serving, a version label is ignored here: all versions are reported.
            version, _ = _spec_version(request.model_spec)
            statuses = self.manager.status(request.model_spec.name, version)
            return status_response(statuses)
        except ServingError as error:
            _abort(context, error)


def status_response(statuses):
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
        entry.status.error_code = status.error_code
        entry.status.error_message = status.error_message
    return response


def _timed(function, phase: str):
    def timed(value):
        start = time.perf_counter()
        result = function(value)
        PHASES.add(phase, time.perf_counter() - start)
        return result
    return timed


def _prediction_handlers(servicer: PredictionServicer):
    """PredictionService's Predict and GetModelMetadata (the others are UNIMPLEMENTED, as in the
    generated servicer), with Predict's parsing and serialisation timed."""
    from tensorflow_serving.apis import predict_pb2

    def predict(request, context):
        start = time.perf_counter()
        try:
            return servicer.Predict(request, context)
        finally:
            PHASES.add("handler", time.perf_counter() - start)

    handlers = {
        "Predict": grpc.unary_unary_rpc_method_handler(
            predict, request_deserializer=_timed(predict_pb2.PredictRequest.FromString, "parse"),
            response_serializer=_timed(predict_pb2.PredictResponse.SerializeToString, "serialize")),
        "GetModelMetadata": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelMetadata,
            request_deserializer=get_model_metadata_pb2.GetModelMetadataRequest.FromString,
            response_serializer=get_model_metadata_pb2.GetModelMetadataResponse.SerializeToString),
    }
    return grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", handlers)


def build_grpc_server(manager: ModelManager, address: str, max_workers: int = 32,
                      max_message_bytes: int = 64 * 1024 * 1024, credentials=None) -> tuple[grpc.Server, int]:
    """A started-on-demand gRPC server; returns it and the bound port."""
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes),
               # gRPC sets SO_REUSEPORT by default: a second server on the same port would
               # start silently and take part of the traffic. Refuse instead.
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                         options=options)
    server.add_generic_rpc_handlers((_prediction_handlers(PredictionServicer(manager)),))
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise TransferkitError(f"gRPC port {address}: cannot bind (already in use, or not an address of this "
                               f"machine); choose another --port")
    return server, port
