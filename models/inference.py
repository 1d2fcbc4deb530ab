"""One traced inference graph per model, shared by every pass over data (feature extraction, evaluation).

Op-by-op eager calls cost far more time than a traced forward pass, and on the
CPU they also hold memory per op and shape (a Lite0 evaluation at 224 px grew
the process by 800 MB eagerly). Tracing once per model keeps one graph.
"""

from __future__ import annotations

import weakref

_TRACED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def traced_forward(model, input_spec=None):
    """`model(inputs, training=False)` as a `tf.function`, traced once per model.

    `input_spec` (a dataset's `element_spec` for the inputs) fixes the
    signature with the batch dimension left open, so a short last batch does
    not trace the model a second time; without it, shapes are relaxed after
    the first retrace.
    """
    import tensorflow as tf

    if model not in _TRACED:
        # A weak reference: the cached function must not keep its model (the cache's key) alive.
        model_ref = weakref.ref(model)

        def forward(inputs):
            return model_ref()(inputs, training=False)

        if input_spec is not None:
            signature = [tf.nest.map_structure(lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype), input_spec)]
            _TRACED[model] = tf.function(forward, input_signature=signature)
        else:
            _TRACED[model] = tf.function(forward, reduce_retracing=True)
    return _TRACED[model]
