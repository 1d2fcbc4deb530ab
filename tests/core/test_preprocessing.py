"""The typed preprocessors: JSON round trips, clear errors, and runs written before them."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transferkit.errors import ConfigError
from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor
from transferkit.plugins.text_classification.preprocessor import TextPreprocessor
from transferkit.preprocessing import INFO_KEY
from transferkit.vision.preprocessor import ImagePreprocessor

VOCABULARY = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film")


@pytest.mark.parametrize("preprocessor", [
    ImagePreprocessor((48, 32), "pad", 0.9, "area", 10_000),
    AudioPreprocessor(sample_rate=8000, clip_seconds=0.5, image_size=(64, 48)),
    TextPreprocessor(VOCABULARY, sequence_length=12, lowercase=False),
], ids=lambda p: type(p).__name__)
def test_round_trip_through_json(preprocessor):
    config = json.loads(preprocessor.to_json())
    assert config["class_name"] == type(preprocessor).__name__
    again = type(preprocessor).from_config(config)
    assert again == preprocessor and again.get_config() == config
    assert type(preprocessor).from_info({INFO_KEY: config}) == preprocessor


def test_settings_of_another_class_or_unknown_keys_are_refused():
    image = ImagePreprocessor((32, 32)).get_config()
    with pytest.raises(ValueError, match="saved settings are of a ImagePreprocessor"):
        AudioPreprocessor.from_config(image)
    with pytest.raises(ValueError, match=r"unknown settings \['sharpen'\]"):
        ImagePreprocessor.from_config({**image, "sharpen": 2})


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": (4, 32)}, r"image_size must be two integers in \[8, 4096\].*Received: image_size=\[4, 32\]"),
    ({"resize": "fill"}, "resize must be one of 'crop', 'pad', 'stretch'. Received: resize='fill'"),
    ({"interpolation": "cubic"}, "Received: interpolation='cubic'"),
    ({"crop_fraction": 0.0}, r"crop_fraction must be in \[0.1, 1\]"),
    ({"max_pixels": 100}, r"max_pixels must be at least the pixels of image_size \(1024\)"),
])
def test_image_settings_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ImagePreprocessor(**{"image_size": (32, 32), **kwargs})


def test_text_vocabulary_needs_the_special_tokens():
    with pytest.raises(ConfigError, match=r"lacks the special tokens \['\[CLS\]'\]"):
        TextPreprocessor(("[PAD]", "[UNK]", "[SEP]", "good"))
    assert "7 tokens" in repr(TextPreprocessor(VOCABULARY))


def test_runs_written_before_preprocessors_read_their_loose_keys():
    # Image runs recorded loose keys; a key those versions did not write means what they did.
    legacy = ImagePreprocessor.from_info({"image_size": [40, 30], "resize": "pad", "max_pixels": 5000})
    assert legacy == ImagePreprocessor((40, 30), "pad", crop_fraction=1.0, interpolation="bilinear", max_pixels=5000)
    text = TextPreprocessor.from_info({"vocabulary_tokens": list(VOCABULARY), "sequence_length": 9,
                                       "lowercase": True, "strip_accents": False})
    assert text == TextPreprocessor(VOCABULARY, 9, True, False)


def test_image_preprocess_and_read_file_give_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 255, (6, 9, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    pre = ImagePreprocessor((24, 24), "crop", 0.875, "area")
    graph = pre.preprocess(tf.constant(path.read_bytes())).numpy()
    assert graph.shape == pre.model_input_shape and graph.dtype == np.float32
    np.testing.assert_array_equal(graph, pre.read_file(str(path)).astype(np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more pixels than the cap"):
        ImagePreprocessor((24, 24), max_pixels=1000).preprocess(tf.constant(path.read_bytes()))


def test_text_preprocess_is_one_row_of_the_batch_encoding():
    pre = TextPreprocessor(VOCABULARY, sequence_length=6)
    one = pre.preprocess(tf.constant("Good film"))
    batch = pre.encoder(tf.constant(["Good film", "bad"]))
    for key in ("token_ids", "padding_mask"):
        np.testing.assert_array_equal(one[key].numpy(), batch[key].numpy()[0])
    assert one["token_ids"].numpy().tolist() == [2, 4, 6, 3, 0, 0]
