import numpy as np
import pytest
from PIL import Image, ImageOps

from transferkit.vision.preprocessor import ImagePreprocessor
from transferkit.errors import DataError
from transferkit.plugins.image_classification import data as data_lib
from transferkit.plugins.image_classification.testing import make_image_folder


def _names(samples):
    return sorted(s.label for s in samples)


def test_formats_and_modes_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    rgba.save(tmp_path / "a.png")
    Image.new("L", (10, 10), 128).save(tmp_path / "b.bmp")
    frames = [Image.new("P", (10, 10), i) for i in (1, 2)]
    frames[0].save(tmp_path / "c.gif", save_all=True, append_images=frames[1:])
    for name in ("a.png", "b.bmp", "c.gif"):
        array = data_lib.decode_image(str(tmp_path / name), (8, 8), "crop")
        assert array.shape == (8, 8, 3) and array.dtype == np.uint8
    red = data_lib.decode_image(str(tmp_path / "a.png"), (8, 8), "stretch")
    assert tuple(red[4, 4]) == (255, 0, 0)


def test_exif_orientation_is_applied(tmp_path):
    # A landscape image whose EXIF says "rotate 90": it must come out portrait.
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    upright = data_lib.decode_image(str(tmp_path / "phone.jpg"), (40, 20), "stretch")
    assert upright.shape == (40, 20, 3)
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50  # white half now on top


def test_pad_keeps_aspect_and_crop_fills(tmp_path):
    Image.new("RGB", (40, 10), (200, 200, 200)).save(tmp_path / "wide.png")
    padded = data_lib.decode_image(str(tmp_path / "wide.png"), (16, 16), "pad")
    assert padded[0].mean() == 0 and padded[8].mean() > 150
    cropped = data_lib.decode_image(str(tmp_path / "wide.png"), (16, 16), "crop")
    assert cropped.min() > 150


def test_bad_files_are_listed_with_reasons_or_fatal(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=3, size=16)
    (root / "circle" / "truncated.jpg").write_bytes((root / "circle" / "circle_000.png").read_bytes()[:60])
    (root / "square" / "notes.jpg").write_text("not an image")
    (root / "empty_class").mkdir()
    samples, problems = data_lib.list_samples(root)
    assert [p["reason"] for p in problems] == ["empty class folder (no images); class skipped"]
    loaded = data_lib.load_images(samples, ["circle", "square", "triangle"], ImagePreprocessor((16, 16)), "skip")
    assert len(loaded.labels) == 9
    reasons = {p["path"].split("/")[-1]: p["reason"] for p in loaded.problems}
    assert set(reasons) == {"truncated.jpg", "notes.jpg"}
    assert all(r.startswith("unreadable image:") for r in reasons.values())
    with pytest.raises(DataError, match=r"(truncated|notes)\.jpg: unreadable image: .*on_bad_image is 'error'"):
        data_lib.load_images(samples, ["circle", "square", "triangle"], ImagePreprocessor((16, 16)), "error")


def test_csv_rows_missing_files_and_unknown_labels(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=2, size=16)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\n"
                        "imgs/circle/circle_000.png,circle\n"
                        "imgs/square/square_000.png,square\n"
                        "imgs/missing.png,circle\n"
                        "imgs/triangle/triangle_000.png,hexagon\n")
    samples, problems = data_lib.list_samples(csv_path)
    assert len(samples) == 3
    assert problems[0]["path"].endswith("labels.csv:4") and "file not found" in problems[0]["reason"]
    loaded = data_lib.load_images(samples, ["circle", "square"], ImagePreprocessor((16, 16)), "skip")
    assert loaded.labels.tolist() == [0, 1]
    assert "label 'hexagon' is not one of the classes" in loaded.problems[0]["reason"]
    with pytest.raises(DataError, match="label 'hexagon' is not one of the classes"):
        data_lib.load_images(samples, ["circle", "square"], ImagePreprocessor((16, 16)), "error")


def test_csv_header_and_missing_source_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,x\n")
    with pytest.raises(DataError, match=r"bad.csv: expected a header with columns 'path' and 'label'"):
        data_lib.list_samples(bad)
    with pytest.raises(DataError, match=r"nowhere: not found"):
        data_lib.list_samples(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        data_lib.list_samples(tmp_path / "flat")


PIL_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                 7: "TRANSVERSE", 8: "ROTATE_90"}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow_in_training_and_serving(tmp_path, orientation):
    import tensorflow as tf

    rng = np.random.default_rng(orientation)
    pixels = np.kron(rng.integers(0, 4, (3, 5, 3)) * 60, np.ones((8, 8, 1))).astype(np.uint8)  # 24x40 blocks
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    data = path.read_bytes()
    decoded = tf.io.decode_jpeg(data).numpy()  # the stored, unrotated pixels
    method = PIL_TRANSPOSE.get(orientation)
    expected = np.asarray(Image.fromarray(decoded).transpose(getattr(Image.Transpose, method))) if method else decoded
    with Image.open(path) as image:  # Pillow's own reading of the tag agrees on the shape
        assert ImageOps.exif_transpose(image).size[::-1] == expected.shape[:2]
    training = data_lib.decode_image(str(path), expected.shape[:2], "stretch")
    np.testing.assert_array_equal(training, expected)
    serving = ImagePreprocessor(expected.shape[:2], "stretch").preprocess(tf.constant(data)).numpy()
    np.testing.assert_array_equal(serving, expected)


def test_exif_parser_survives_garbage():
    import tensorflow as tf

    for junk in (b"", b"\xff\xd8", b"\xff\xd8Exif\x00\x00", b"\xff\xd8Exif\x00\x00II*\x00\xff\xff\xff\xff",
                 b"\x89PNG" + b"Exif\x00\x00MM" * 10, bytes(range(256)) * 3):
        assert int(data_lib.exif_orientation(tf.constant(junk))) == 1


def test_area_resize_averages_when_shrinking_and_falls_back_to_bilinear_when_enlarging():
    from transferkit.vision.images import resize_image

    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, size=(8, 12, 3)).astype(np.float32)
    area = resize_image(big, (4, 6), "stretch", interpolation="area").numpy()
    blocks = big.reshape(4, 2, 6, 2, 3).mean(axis=(1, 3))  # each output pixel: the mean of a 2x2 block
    np.testing.assert_array_equal(area, np.clip(np.round(blocks), 0, 255))
    assert not np.array_equal(area, resize_image(big, (4, 6), "stretch").numpy())  # bilinear differs
    small = big[:3, :3]
    for resize in ("stretch", "crop", "pad"):
        np.testing.assert_array_equal(resize_image(small, (6, 6), resize, interpolation="area").numpy(),
                                      resize_image(small, (6, 6), resize, interpolation="bilinear").numpy())
    with pytest.raises(ValueError, match=r"interpolation: expected one of \('area', 'bilinear'\). Received: "
                                         r"interpolation='cubic'"):
        resize_image(big, (4, 6), "stretch", interpolation="cubic")


def test_jpeg_frame_size_reads_what_pillow_reads_and_leaves_the_rest_to_it(tmp_path):
    import io

    from transferkit.vision import images

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "maker"  # orientation: a quarter turn
    cases = {}
    for name, save in {
        "baseline": dict(quality=90),
        "progressive": dict(quality=80, progressive=True),
        "exif_and_icc": dict(exif=exif, icc_profile=b"\0" * 5000),
    }.items():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", **save)
        cases[name] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buffer, "JPEG")
    cases["grayscale"] = buffer.getvalue()
    for name, data in cases.items():
        assert images.jpeg_frame_size(data) == (53, 37), name
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        assert images.image_header(str(path)) == ("JPEG", 53, 37), name
    # The EXIF orientation turns a quarter: the upright size comes from Pillow's reading of it.
    assert images.image_header(str(tmp_path / "exif_and_icc.jpg"), upright=True) == ("JPEG", 37, 53)
    baseline = cases["baseline"]
    sof = baseline.index(b"\xff\xc0")
    zero_height = baseline[:sof + 5] + b"\0\0" + baseline[sof + 7:]
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    twelve_bit = baseline[:sof + 4] + b"\x0c" + baseline[sof + 5:]
    two_components = baseline[:sof + 9] + b"\x02" + baseline[sof + 10:]
    for name, data in {"truncated before the scan": baseline[:sof + 6], "zero height": zero_height,
                       "12-bit samples": twelve_bit, "two components": two_components,
                       "a broken segment": baseline[:4] + b"\x00\x01" + baseline[6:],
                       "png": png.getvalue(), "empty": b""}.items():
        assert images.jpeg_frame_size(data) is None, name


def test_top_k_accuracy_only_when_it_says_something():
    from transferkit.classification.metrics import classification_metrics, keras_metrics

    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    y_true = np.array([1, 2, 0])
    three = classification_metrics(y_true, probabilities, ["a", "b", "c"], top_k=5)
    assert "top5_accuracy" not in three and "top3_accuracy" not in three and three["accuracy"] == 2 / 3
    two = classification_metrics(y_true, probabilities, ["a", "b", "c"], top_k=2)
    assert two["top2_accuracy"] == 1.0
    assert [m.name for m in keras_metrics(5, 3)] == ["accuracy"]
    assert [m.name for m in keras_metrics(2, 3)] == ["accuracy", "top2_accuracy"]
