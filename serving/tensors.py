"""TensorProto <-> numpy without TensorFlow's general-purpose helpers.

`tf.make_tensor_proto` and `tf.make_ndarray` cost hundreds of microseconds a
call; a served image pays that on both ends of every request. These handle
the dtypes the serving signatures use (numbers through `tensor_content`,
strings through `string_val`) directly and defer to TensorFlow for the rest.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

_NUMPY_TO_ENUM = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.bool_): types_pb2.DT_BOOL,
}
_ENUM_TO_NUMPY = {v: k for k, v in _NUMPY_TO_ENUM.items()}
# The typed repeated field of each dtype, for protos written without tensor_content.
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
}


def string_tensor(values, shape=None) -> tensor_pb2.TensorProto:
    """A DT_STRING TensorProto from a sequence of bytes (or str)."""
    return fill_string_tensor(tensor_pb2.TensorProto(), values, shape)


def fill_string_tensor(proto: tensor_pb2.TensorProto, values, shape=None) -> tensor_pb2.TensorProto:
    """Writes bytes (or str) into `proto` in place: a request's own input, with no copy of the payload
    through a temporary proto (`CopyFrom` copies every byte again)."""
    items = [v.encode() if isinstance(v, str) else v if isinstance(v, bytes) else bytes(v) for v in values]
    proto.dtype = types_pb2.DT_STRING
    for size in (shape if shape is not None else [len(items)]):
        proto.tensor_shape.dim.add(size=int(size))
    proto.string_val.extend(items)
    return proto


def to_tensor_proto(value) -> tensor_pb2.TensorProto:
    return fill_tensor_proto(tensor_pb2.TensorProto(), value)


def fill_tensor_proto(proto: tensor_pb2.TensorProto, value) -> tensor_pb2.TensorProto:
    """Writes an array (or anything numpy takes) into an empty `proto` in place."""
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "SU":
        return fill_string_tensor(proto, array.reshape(-1).tolist(), array.shape)
    enum = _NUMPY_TO_ENUM.get(array.dtype)
    if enum is None:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return proto
    proto.dtype = enum
    for size in array.shape:
        proto.tensor_shape.dim.add(size=int(size))
    proto.tensor_content = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return proto


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype == types_pb2.DT_STRING:
        values = list(proto.string_val)
        count = int(np.prod(shape)) if shape else 1
        if len(values) == 1 and count > 1:
            values = values * count  # a single value broadcasts, as in TensorFlow
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = _ENUM_TO_NUMPY.get(proto.dtype)
    if dtype is None:
        import tensorflow as tf

        return tf.make_ndarray(proto)
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    values = np.asarray(getattr(proto, _VALUE_FIELDS[proto.dtype]), dtype=dtype)
    count = int(np.prod(shape)) if shape else 1
    if values.size == 1 and count > 1:
        values = np.full(count, values[0], dtype=dtype)
    if values.size != count:
        raise ValueError(f"TensorProto has {values.size} values for shape {shape}")
    return values.reshape(shape)
