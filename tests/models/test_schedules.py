import keras
import numpy as np
import pytest

from transferkit.config import StageConfig
from transferkit.models.schedules import WarmupSchedule, build_optimizer, gradual_unfreezing


def test_warmup_then_cosine():
    schedule = WarmupSchedule(1.0, total_steps=10, warmup_steps=2, decay="cosine")
    values = [float(schedule(step)) for step in range(11)]
    assert values[0] == pytest.approx(0.5)
    assert values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(1.0)
    assert values[10] == pytest.approx(0.0, abs=1e-6)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))


def test_constant_schedule_and_argument_validation():
    assert float(WarmupSchedule(0.1, total_steps=5)(4)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="Received: total_steps=0"):
        WarmupSchedule(0.1, total_steps=0)


def test_discriminative_learning_rates_scale_updates():
    early = keras.Variable(np.zeros(3, "float32"), name="early")
    late = keras.Variable(np.zeros(3, "float32"), name="late")
    stage = StageConfig(name="s", optimizer="sgd", learning_rate=0.1, lr_multipliers={"early": 0.1})
    optimizer = build_optimizer(stage, steps_per_epoch=1, variables=[early, late])
    optimizer.apply_gradients([(np.ones(3, "float32"), early), (np.ones(3, "float32"), late)])
    np.testing.assert_allclose(np.asarray(late), -0.1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(early), -0.01, rtol=1e-6)


def test_gradual_unfreezing_is_a_schedule():
    stages = gradual_unfreezing(blocks=3, epochs_per_block=2, learning_rate=1e-3, decay_per_block=0.5)
    assert [s.freeze.top_blocks for s in stages] == [1, 2, 3]
    assert [s.learning_rate for s in stages] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_multipliers_scale_weight_decay_and_zero_freezes():
    frozen = keras.Variable(np.ones(3, "float32"), name="frozen_block")
    half = keras.Variable(np.ones(3, "float32"), name="half_block")
    full = keras.Variable(np.ones(3, "float32"), name="head")
    stage = StageConfig(name="s", optimizer="adamw", learning_rate=0.1, weight_decay=0.5,
                        lr_multipliers={"frozen": 0.0, "half": 0.5})
    optimizer = build_optimizer(stage, steps_per_epoch=1, variables=[frozen, half, full])
    zero = np.zeros(3, "float32")
    optimizer.apply_gradients([(zero, frozen), (zero, half), (zero, full)])
    np.testing.assert_allclose(np.asarray(frozen), 1.0)
    np.testing.assert_allclose(np.asarray(full), 1.0 - 0.5 * 0.1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(half), 1.0 - 0.5 * 0.1 * 0.5, rtol=1e-6)


def test_adamw_default_and_explicit_zero_weight_decay():
    variables = [keras.Variable(np.ones(2, "float32"))]
    assert build_optimizer(StageConfig(name="s", optimizer="adamw"), 1, variables).weight_decay == 0.004
    assert build_optimizer(StageConfig(name="s", optimizer="adamw", weight_decay=0.0), 1, variables).weight_decay \
        == 0.0
