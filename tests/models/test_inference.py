"""Traced forward passes: the frozen-weights graph agrees with the model and follows weight changes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit.models import inference


def _conv_bn_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = keras.Model(inputs, {"pooled": x, "doubled": x * 2.0})
    # Moving statistics away from 0/1, so that folding them into the convolution changes something.
    bn = model.layers[2]
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 4).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 4).astype("float32"))
    return model


def _spec():
    return tf.TensorSpec([4, 8, 8, 3], tf.float32)


def test_frozen_forward_matches_the_model_for_any_batch_size():
    model = _conv_bn_model()
    forward = inference.frozen_forward(model, _spec())
    for batch in (4, 3):
        x = np.random.default_rng(batch).uniform(0, 1, (batch, 8, 8, 3)).astype("float32")
        expected = model(x, training=False)
        got = forward(x)
        for key in ("pooled", "doubled"):
            np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=1e-5)


def test_frozen_forward_is_reused_until_the_weights_change():
    model = _conv_bn_model()
    forward = inference.frozen_forward(model, _spec())
    assert inference.frozen_forward(model, _spec()) is forward
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    before = np.asarray(forward(x)["pooled"])
    kernel = model.layers[1].kernel
    kernel.assign(kernel * 3.0)  # as a stage that trained the backbone would
    retraced = inference.frozen_forward(model, _spec())
    assert retraced is not forward
    after = np.asarray(retraced(x)["pooled"])
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_allclose(after, np.asarray(model(x, training=False)["pooled"]), atol=1e-5)


def test_frozen_forward_takes_dict_inputs_and_follows_the_signature():
    inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((3,), name="b")}
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()([inputs["a"], inputs["b"]])))
    spec = {"a": tf.TensorSpec([4, 3], tf.float32), "b": tf.TensorSpec([4, 3], tf.float32)}
    x = {"a": np.ones((2, 3), "float32"), "b": np.arange(6, dtype="float32").reshape(2, 3)}
    np.testing.assert_allclose(np.asarray(inference.frozen_forward(model, spec)(x)),
                               np.asarray(model(x, training=False)), atol=1e-6)
    wider = {"a": tf.TensorSpec([4, 3], tf.float64), "b": tf.TensorSpec([4, 3], tf.float64)}
    assert inference.frozen_forward(model, wider) is not inference.frozen_forward(model, spec)


def test_large_models_keep_their_variables(monkeypatch):
    model = _conv_bn_model()
    monkeypatch.setattr(inference, "FOLD_WEIGHTS_MAX_BYTES", 16)
    assert inference.frozen_forward(model, _spec()) is inference.traced_forward(model, _spec())


def test_weights_fingerprint_changes_with_any_weight():
    model = _conv_bn_model()
    before = inference.weights_fingerprint(model)
    assert inference.weights_fingerprint(model) == before
    model.layers[2].moving_mean.assign(model.layers[2].moving_mean + 1e-3)
    assert inference.weights_fingerprint(model) != before


