import numpy as np
import pytest
import tensorflow as tf

from transferkit.serving.tensors import string_tensor, to_ndarray, to_tensor_proto


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(6, dtype=np.int32).reshape(2, 3),
    np.arange(4, dtype=np.int64),
    np.array([True, False]),
    np.array([[b"a", b"bc"], [b"\xff\x00", b""]], dtype=object),
    np.float32(3.5).reshape(()),
])
def test_round_trip_and_agreement_with_tensorflow(array):
    proto = to_tensor_proto(array)
    np.testing.assert_array_equal(to_ndarray(proto), array)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)  # TensorFlow reads ours
    np.testing.assert_array_equal(to_ndarray(tf.make_tensor_proto(array)), array)  # we read TensorFlow's


def test_typed_fields_and_broadcast_scalars():
    proto = tf.make_tensor_proto(np.float32(2.0), shape=[3])  # one float_val broadcast to 3
    np.testing.assert_array_equal(to_ndarray(proto), [2.0, 2.0, 2.0])
    assert to_ndarray(string_tensor([b"x", "y"])).tolist() == [b"x", b"y"]
