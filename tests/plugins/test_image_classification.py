import json

import numpy as np
import pytest

from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.testing import run_task_test


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("shapes"), per_class=8, size=32)


def test_run_task_test_image_classification(shapes, tmp_path):
    config = tiny_config(shapes)
    result = run_task_test("image_classification", config, tmp_path / "run")
    history = result["history"]
    assert [row["stage"] for row in history] == ["head", "finetune"]
    assert all(np.isfinite(row["loss"]) for row in history)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_examples"] == 5  # 20% of 24
    assert len(metrics["confusion_matrix"]) == 3
    for name in ("confusion_matrix.png", "training_curves.png", "worst_classified.png"):
        assert (tmp_path / "run" / "report" / name).stat().st_size > 1000
    assert (tmp_path / "run" / "labels.txt").read_text().split() == ["circle", "square", "triangle"]


def test_cutmix_and_mixup_keep_labels_consistent_with_pixels():
    import tensorflow as tf

    from transferkit.plugins.image_classification.task import _cutmix, _mixup

    tf.random.set_seed(3)
    # Image i is filled with the value i; its label is one-hot i.
    images = tf.stack([tf.fill([16, 16, 3], float(i)) for i in range(4)])
    labels = tf.one_hot(tf.range(4), 4)
    for mix in (_cutmix, _mixup):
        mixed_images, mixed_labels = mix(images, labels, 1.0)
        np.testing.assert_allclose(mixed_labels.numpy().sum(axis=1), 1.0, rtol=1e-6)
        # The label-weighted mean of the source values equals each mixed image's mean pixel.
        expected_means = (mixed_labels.numpy() * np.arange(4)).sum(axis=1)
        np.testing.assert_allclose(mixed_images.numpy().mean(axis=(1, 2, 3)), expected_means, atol=1e-4)


def test_training_with_cutmix_and_mixup_runs(shapes, tmp_path):
    config = tiny_config(shapes, augment={"flip": "horizontal", "cutmix_alpha": 1.0, "mixup_alpha": 0.2},
                         stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 1}])
    result = run_task_test("image_classification", config, tmp_path / "run")
    assert np.isfinite(result["history"][0]["loss"])


def test_worst_images_kept_while_streaming_equal_the_whole_set_ranking(tmp_path):
    from transferkit.classification.evaluation import ClassificationEvaluation

    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(4), size=70).astype(np.float32)
    labels = rng.integers(0, 4, size=70)
    images = rng.integers(0, 255, size=(70, 8, 8, 3)).astype(np.float32)
    order = rng.permutation(70)  # batches arrive in any row order
    shown = {}
    evaluation = ClassificationEvaluation(list("abcd"), top_k=2, records=[f"img{i}.png" for i in range(70)],
                                          write_worst=lambda folder, worst, names: shown.update(worst=worst))
    for start in range(0, 70, 32):  # batches of 32, 32, 6
        rows = order[start:start + 32]
        evaluation.update(images[rows], probabilities[rows], np.eye(4)[labels[rows]], rows)
    metrics = evaluation.result(tmp_path / "report")
    true_prob = probabilities[np.arange(70), labels]
    expected = list(np.argsort(true_prob, kind="stable")[:16])
    assert [row for row, *_ in shown["worst"]] == expected
    for row, true, probs, image in shown["worst"]:
        assert true == labels[row]
        np.testing.assert_array_equal(probs, probabilities[row])
        np.testing.assert_array_equal(image, images[row].astype(np.uint8))
    assert metrics["accuracy"] == float(np.mean(probabilities.argmax(axis=1) == labels))
    assert "skipped_in_evaluation" not in metrics and (tmp_path / "report" / "confusion_matrix.png").exists()
