"""Detection annotation readers and writers: round trips, messy data, the real raccoon set."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.errors import ConfigError, DataError
from transferkit.plugins.object_detection import annotations as ann_lib

RACCOON = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "raccoon"
CSV_HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def _image(path: Path, size=(64, 48), image_format=None, exif_orientation=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (90, 140, 200))
    if exif_orientation is None:
        image.save(path, format=image_format)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, format=image_format or "JPEG", exif=exif)
    return path


def _read_both_modes(source, expected_path, expected_reason, **kwargs):
    """Reads in "skip" mode (the problem is listed) and in "error" mode (the same text is raised)."""
    annotations, problems = ann_lib.read_annotations(source, **kwargs)
    matching = [p for p in problems if expected_reason in p["reason"]]
    assert matching, problems
    assert matching[0]["path"] == str(expected_path)
    with pytest.raises(DataError, match=re.escape(expected_reason)):
        ann_lib.read_annotations(source, on_bad_annotation="error", **kwargs)
    return annotations, problems


def _csv(tmp_path: Path, rows: str, name="labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(CSV_HEADER + rows)
    return path


# ---------------------------------------------------------------- round trips

@pytest.fixture
def dataset(tmp_path):
    images = tmp_path / "images"
    return [
        ann_lib.ImageAnnotation(str(_image(images / "a.jpg", (64, 48))), 64, 48,
                                [[1.25, 2.5, 30.75, 40.0], [10.0, 0.0, 64.0, 48.0]], ["cat", "dog"]),
        ann_lib.ImageAnnotation(str(_image(images / "b.png", (50, 40))), 50, 40, [[5.5, 6.0, 20.125, 39.0]], ["dog"]),
        ann_lib.ImageAnnotation(str(_image(images / "c.jpg", (32, 32))), 32, 32, np.zeros((0, 4)), []),
    ]


def _assert_same(read, written, tolerance):
    assert [Path(a.path).name for a in read] == [Path(a.path).name for a in written]
    for got, want in zip(read, written):
        assert (got.width, got.height, got.labels) == (want.width, want.height, want.labels)
        assert got.boxes.dtype == np.float32 and got.boxes.shape == want.boxes.shape
        np.testing.assert_allclose(got.boxes, want.boxes, atol=tolerance)


def test_voc_round_trip(tmp_path, dataset):
    ann_lib.write_voc(dataset, tmp_path / "annotations")
    read, problems = ann_lib.read_annotations(tmp_path / "annotations")
    assert problems == []
    _assert_same(read, dataset, 1e-3)
    assert [a.path for a in read] == [a.path for a in dataset]  # found through ../images


def test_coco_round_trip(tmp_path, dataset):
    ann_lib.write_coco(dataset, tmp_path / "coco.json", ["cat", "dog"])
    read, problems = ann_lib.read_annotations(tmp_path / "coco.json")
    assert problems == []
    _assert_same(read, dataset, 1e-3)


def test_yolo_round_trip(tmp_path, dataset):
    ann_lib.write_yolo(dataset, tmp_path / "yolo", ["cat", "dog"])
    read, problems = ann_lib.read_annotations(tmp_path / "yolo")
    assert problems == []
    _assert_same(read, dataset, 0.01)
    again, _ = ann_lib.read_annotations(tmp_path / "yolo" / "data.yaml")
    assert [a.labels for a in again] == [a.labels for a in read]


def test_csv_round_trip(tmp_path, dataset):
    ann_lib.write_csv(dataset, tmp_path / "labels.csv")
    read, problems = ann_lib.read_annotations(tmp_path / "labels.csv")
    assert problems == []
    _assert_same(read, dataset, 1e-3)
    assert ann_lib.class_names_of(read) == ["cat", "dog"]


def test_writers_replace_files_without_leaving_temporaries(tmp_path, dataset):
    for _ in range(2):
        ann_lib.write_csv(dataset, tmp_path / "out" / "labels.csv")
        ann_lib.write_coco(dataset, tmp_path / "out" / "coco.json", ["cat", "dog"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["coco.json", "labels.csv"]


def test_detect_format(tmp_path, dataset):
    ann_lib.write_voc(dataset, tmp_path / "voc")
    ann_lib.write_yolo(dataset, tmp_path / "yolo", ["cat", "dog"])
    assert ann_lib.detect_format(tmp_path / "voc") == "voc"
    assert ann_lib.detect_format(tmp_path / "voc" / "a.xml") == "voc"
    assert ann_lib.detect_format(tmp_path / "yolo") == "yolo"
    assert ann_lib.detect_format(tmp_path / "yolo" / "data.yaml") == "yolo"
    assert ann_lib.detect_format(_csv(tmp_path, "")) == "csv"
    (tmp_path / "x.json").write_text("{}")
    assert ann_lib.detect_format(tmp_path / "x.json") == "coco"
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'images'}: unrecognised; expected a COCO .json")):
        ann_lib.detect_format(tmp_path / "images")


def test_yolo_names_as_mapping_or_classes_txt(tmp_path):
    _image(tmp_path / "images" / "sub" / "a.jpg", (100, 50))
    (tmp_path / "labels" / "sub").mkdir(parents=True)
    (tmp_path / "labels" / "sub" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n")
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n")
    read, _ = ann_lib.read_annotations(tmp_path)
    assert read[0].labels == ["dog"]
    np.testing.assert_allclose(read[0].boxes, [[40, 15, 60, 35]], atol=1e-4)
    (tmp_path / "data.yaml").unlink()
    (tmp_path / "classes.txt").write_text("cat\nraccoon\n")
    assert ann_lib.read_annotations(tmp_path)[0][0].labels == ["raccoon"]


# ---------------------------------------------------------------- messy data

def test_box_partly_outside_is_clipped(tmp_path):
    _image(tmp_path / "a.jpg")
    source = _csv(tmp_path, "a.jpg,64,48,cat,-4,5,70,30\n")
    reason = "line 2 ('cat'): box (-4, 5, 70, 30) extends outside the 64x48 image; clipped to (0, 5, 64, 30)"
    read, problems = _read_both_modes(source, source, reason)
    np.testing.assert_array_equal(read[0].boxes, [[0, 5, 64, 30]])
    assert len(problems) == 1


@pytest.mark.parametrize("box, reason", [
    ("10,5,10,30", "line 2 ('cat'): box (10, 5, 10, 30) (xmin, ymin, xmax, ymax) has zero or negative width or "
                   "height; expected xmin < xmax and ymin < ymax; box skipped"),
    ("30,5,10,20", "box (30, 5, 10, 20) (xmin, ymin, xmax, ymax) has zero or negative width or height;"),
    ("70,5,90,20", "box (70, 5, 90, 20) (xmin, ymin, xmax, ymax) has zero or negative width or height after "
                   "clipping to the 64x48 image"),
    ("nan,5,10,20", "line 2 ('cat'): box (nan, 5, 10, 20) has a NaN or infinite coordinate; expected numbers; "
                    "box skipped"),
])
def test_degenerate_box_is_skipped(tmp_path, box, reason):
    _image(tmp_path / "a.jpg")
    source = _csv(tmp_path, f"a.jpg,64,48,cat,{box}\n")
    read, problems = _read_both_modes(source, source, reason)
    assert read[0].boxes.shape == (0, 4) and read[0].labels == [] and len(problems) == 1


def _voc(path: Path, filename: str, size_xml: str, objects_xml: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename>{size_xml}{objects_xml}</annotation>")
    return path


OBJECT = "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>2</xmin><ymin>3.5</ymin>" \
         "<xmax>20</xmax><ymax>30</ymax></bndbox></object>"


@pytest.mark.parametrize("size_xml, reason", [
    ("", "image size (width, height) is missing or not a number; using the real size 64x48 of 'a.jpg'"),
    ("<size><width>0</width><height>0</height></size>",
     "annotated image size 0x0 is zero or negative; using the real size 64x48 of 'a.jpg'"),
    ("<size><width>128</width><height>96</height></size>",
     "annotated image size 128x96 (width x height) differs from the real size 64x48 of 'a.jpg'; "
     "using the real size, boxes not rescaled"),
])
def test_wrong_voc_size_uses_the_real_size(tmp_path, size_xml, reason):
    _image(tmp_path / "images" / "a.jpg")
    source = _voc(tmp_path / "xml" / "a.xml", "a.jpg", size_xml, OBJECT)
    read, problems = _read_both_modes(source, source, reason)
    assert (read[0].width, read[0].height) == (64, 48) and len(problems) == 1
    np.testing.assert_array_equal(read[0].boxes, [[2, 3.5, 20, 30]])  # difficult kept, not rescaled


def test_wrong_csv_and_coco_sizes_use_the_real_size(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    source = _csv(tmp_path, "a.jpg,0,48,cat,1,2,3,4\n")
    _read_both_modes(source, source, "annotated image size 0x48 is zero or negative; using the real size 64x48")
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 7, "file_name": "a.jpg", "width": 32, "height": 24}],
                                "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20]}],
                                "categories": [{"id": 3, "name": "cat"}]}))
    read, _ = _read_both_modes(coco, coco, "annotated image size 32x24 (width x height) differs from the real size "
                                           "64x48 of 'a.jpg'; using the real size, boxes not rescaled")
    np.testing.assert_array_equal(read[0].boxes, [[1, 2, 11, 22]])


def test_exif_orientation_swaps_the_real_size(tmp_path):
    # Stored 64x48 with "rotate 90": decoders turn it upright to 48x64.
    _image(tmp_path / "images" / "a.jpg", (64, 48), exif_orientation=6)
    upright = _voc(tmp_path / "xml" / "a.xml", "a.jpg", "<size><width>48</width><height>64</height></size>", OBJECT)
    read, problems = ann_lib.read_annotations(upright)
    assert (read[0].width, read[0].height, problems) == (48, 64, [])
    stored = _voc(tmp_path / "xml" / "a.xml", "a.jpg", "<size><width>64</width><height>48</height></size>", OBJECT)
    _read_both_modes(stored, stored, "differs from the real size 48x64 of 'a.jpg' (its EXIF orientation turns it "
                                     "upright); using the real size, boxes not rescaled")


def test_unknown_class_is_skipped(tmp_path):
    _image(tmp_path / "a.jpg")
    source = _csv(tmp_path, "a.jpg,64,48,cat,1,2,30,40\na.jpg,64,48,dog,5,6,20,20\n")
    read, problems = _read_both_modes(source, source, "line 3: class 'dog' is not in class_names ['cat']; "
                                                      "box skipped", class_names=["cat"])
    assert read[0].labels == ["cat"] and len(problems) == 1


def test_missing_image_is_skipped(tmp_path):
    _image(tmp_path / "a.jpg")
    source = _csv(tmp_path, "a.jpg,64,48,cat,1,2,30,40\ngone.jpg,64,48,cat,1,2,30,40\n")
    read, problems = _read_both_modes(source, source, "image 'gone.jpg' not found (looked for ")
    assert [Path(a.path).name for a in read] == ["a.jpg"] and len(problems) == 1


def test_image_whose_extension_lies_is_kept(tmp_path):
    image = _image(tmp_path / "a.jpg", image_format="PNG")
    source = _csv(tmp_path, "a.jpg,64,48,cat,1,2,30,40\n")
    read, _ = _read_both_modes(source, image, "file extension '.jpg' says JPEG but the content is PNG; image kept "
                                              "(decoders read the format from the content)")
    assert read[0].labels == ["cat"]


def test_file_that_is_not_an_image_is_skipped(tmp_path):
    _image(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_text("not an image")
    source = _csv(tmp_path, "a.jpg,64,48,cat,1,2,30,40\nb.jpg,64,48,cat,1,2,30,40\n")
    read, _ = _read_both_modes(source, tmp_path / "b.jpg", "not a readable image (UnidentifiedImageError")
    assert [Path(a.path).name for a in read] == ["a.jpg"]


def test_image_without_boxes_is_a_negative(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    source = _voc(tmp_path / "xml" / "a.xml", "a.jpg", "<size><width>64</width><height>48</height></size>", "")
    read, problems = ann_lib.read_annotations(source, on_bad_annotation="error")
    assert problems == [] and read[0].boxes.shape == (0, 4)
    _image(tmp_path / "yolo" / "images" / "b.jpg")
    (tmp_path / "yolo" / "classes.txt").write_text("cat\n")
    read, problems = ann_lib.read_annotations(tmp_path / "yolo", on_bad_annotation="error")
    assert problems == [] and read[0].labels == []


def test_bad_xml_names_file_and_line(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    _voc(tmp_path / "xml" / "a.xml", "a.jpg", "", OBJECT)
    bad = tmp_path / "xml" / "b.xml"
    bad.write_text("<annotation>\n<filename>b.jpg</filename>\n<object>\n</annotation>\n")
    read, _ = _read_both_modes(tmp_path / "xml", bad, "line 4: not well-formed XML (mismatched tag")
    assert len(read) == 1


def test_bad_json_names_file_and_line(tmp_path):
    source = tmp_path / "coco.json"
    source.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=re.escape(f"{source}: no usable annotated images (coco format, 1 problems); "
                                                  f"first problem: {source}: line 2: not valid JSON")):
        ann_lib.read_annotations(source)
    # The parser's own wording follows in parentheses (it changed in Python 3.13).
    with pytest.raises(DataError, match=re.escape(f"{source}: line 2: not valid JSON (")):
        ann_lib.read_annotations(source, on_bad_annotation="error")


def test_csv_missing_columns(tmp_path):
    source = tmp_path / "labels.csv"
    source.write_text("filename,class,xmin,ymin,xmax,ymax\na.jpg,cat,1,2,3,4\n")
    reason = ("line 1: header lacks column(s) width, height; expected filename,width,height,class,xmin,ymin,xmax,ymax;"
              " file skipped")
    with pytest.raises(DataError, match=re.escape(f"first problem: {source}: {reason}")):
        ann_lib.read_annotations(source)
    with pytest.raises(DataError, match=re.escape(f"{source}: {reason}")):
        ann_lib.read_annotations(source, on_bad_annotation="error")


@pytest.mark.parametrize("line, reason", [
    ("0 0.5 0.5 0.2", "line 2: expected 5 fields 'class_id cx cy w h', found 4; line skipped"),
    ("2 0.5 0.5 0.2 0.2", "line 2: class id 2 is out of range; expected one of 0..1; line skipped"),
    ("cat 0.5 0.5 0.2 0.2", "line 2: 'cat 0.5 0.5 0.2 0.2' is not 'class_id cx cy w h' numbers; line skipped"),
])
def test_bad_yolo_line_is_skipped(tmp_path, line, reason):
    _image(tmp_path / "images" / "a.jpg", (100, 50))
    label = tmp_path / "labels" / "a.txt"
    label.parent.mkdir()
    label.write_text(f"1 0.5 0.5 0.2 0.4\n{line}\n")
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    read, problems = _read_both_modes(tmp_path, label, reason)
    assert read[0].labels == ["dog"] and len(problems) == 1


def test_nothing_usable_names_the_source(tmp_path):
    source = _csv(tmp_path, "gone.jpg,64,48,cat,1,2,30,40\n")
    with pytest.raises(DataError, match=re.escape(f"{source}: no usable annotated images (csv format, 1 problems)")):
        ann_lib.read_annotations(source)


def test_bad_arguments_are_config_errors(tmp_path):
    source = _csv(tmp_path, "")
    with pytest.raises(ConfigError, match="on_bad_annotation: 'ignore'; expected 'skip' or 'error'"):
        ann_lib.read_annotations(source, on_bad_annotation="ignore")
    with pytest.raises(ConfigError, match="annotation format: 'kitti'"):
        ann_lib.read_annotations(source, fmt="kitti")


# ---------------------------------------------------------------- real data

@pytest.mark.skipif(not RACCOON.is_dir(), reason=f"real raccoon dataset not found at {RACCOON}")
def test_real_raccoon_dataset():
    expected = {"train_labels.csv": (160, 173), "test_labels.csv": (40, 44), "annotations": (200, 217)}
    read = {}
    for name, (image_count, box_count) in expected.items():
        annotations, problems = ann_lib.read_annotations(RACCOON / name)
        assert problems == []
        assert (len(annotations), sum(len(a.labels) for a in annotations)) == (image_count, box_count)
        assert ann_lib.class_names_of(annotations) == ["raccoon"]
        for a in annotations:
            assert ((a.boxes[:, :2] >= 0) & (a.boxes[:, 2:] <= [a.width, a.height])).all(), a.path
            assert (a.boxes[:, 2:] > a.boxes[:, :2]).all(), a.path
        read[name] = {a.path: a for a in annotations}
    # The CSV splits and the VOC folder describe the same 200 images with the same boxes.
    csv_images = read["train_labels.csv"] | read["test_labels.csv"]
    assert csv_images.keys() == read["annotations"].keys()
    for path, a in read["annotations"].items():
        order = np.lexsort(a.boxes.T), np.lexsort(csv_images[path].boxes.T)
        np.testing.assert_array_equal(a.boxes[order[0]], csv_images[path].boxes[order[1]])
