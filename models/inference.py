"""One traced inference graph per model, shared by every pass over data (feature extraction, evaluation).

Op-by-op eager calls cost far more time than a traced forward pass, and on the
CPU they also hold memory per op and shape (a Lite0 evaluation at 224 px grew
the process by 800 MB eagerly). Tracing once per model keeps one graph.
"""

from __future__ import annotations

import weakref

_TRACED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def traced_forward(model):
    """`model(inputs, training=False)` as a `tf.function`, traced once per model and input signature."""
    import tensorflow as tf

    if model not in _TRACED:
        _TRACED[model] = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)
    return _TRACED[model]
