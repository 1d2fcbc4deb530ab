"""Compressed CSV, TSV and JSON Lines inputs are read as they are."""

import bz2
import gzip
import lzma

import pytest

from transferkit.compressed import inner_suffix, plain_copy
from transferkit.errors import DataError

COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_text_tables_and_json_lines_read_the_same_compressed(tmp_path, monkeypatch, suffix):
    from transferkit.plugins.text_classification.config import DataConfig
    from transferkit.plugins.text_classification.data import read_examples

    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path / "home"))
    table = "text,label\n" + "".join(f'"review {i}, with a comma",{"pos" if i % 2 else "neg"}\n' for i in range(9))
    jsonl = "".join(f'{{"text": "line {i} caf\\u00e9", "label": "l{i % 3}"}}\n' for i in range(7))
    for name, content in (("reviews.csv", table), ("reviews.jsonl", jsonl)):
        (tmp_path / name).write_text(content, encoding="utf-8")
        (tmp_path / (name + suffix)).write_bytes(COMPRESSORS[suffix](content.encode("utf-8")))
        plain = read_examples(str(tmp_path / name), DataConfig(train=str(tmp_path / name)))
        packed = read_examples(str(tmp_path / (name + suffix)), DataConfig(train=str(tmp_path / (name + suffix))))
        assert [(e.text, e.label) for e in packed.examples] == [(e.text, e.label) for e in plain.examples]
        assert len(plain.examples) in (9, 7) and packed.problems == plain.problems
        assert packed.notes[0]["path"].endswith(name + suffix) and "decompressed copy" in packed.notes[0]["reason"]


def test_image_csv_compressed_keeps_paths_relative_to_its_own_folder(tmp_path):
    from transferkit.plugins.image_classification.data import list_samples
    from transferkit.plugins.image_classification.testing import make_image_folder

    make_image_folder(tmp_path / "imgs", per_class=2, size=16)
    rows = "path,label\nimgs/circle/circle_000.png,circle\nimgs/square/square_001.png,square\n"
    (tmp_path / "labels.csv.gz").write_bytes(gzip.compress(rows.encode()))
    samples, problems = list_samples(tmp_path / "labels.csv.gz")
    assert [(s.path.split("/")[-1], s.label) for s in samples] == [("circle_000.png", "circle"),
                                                                    ("square_001.png", "square")]
    assert problems == []


def test_a_damaged_archive_is_named_and_the_copy_is_made_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path / "home"))
    good = tmp_path / "ok.tsv.xz"
    good.write_bytes(lzma.compress(b"text\tlabel\nfine\ta\n"))
    first = plain_copy(good)
    assert first.read_bytes() == b"text\tlabel\nfine\ta\n" and first.suffix == ".tsv"
    assert plain_copy(good) == first and first.stat().st_mtime_ns == plain_copy(good).stat().st_mtime_ns
    broken = tmp_path / "cut.csv.gz"
    broken.write_bytes(gzip.compress(b"text,label\n" * 1000)[:40])
    with pytest.raises(DataError, match=r"cut.csv.gz: cannot be decompressed \(EOFError"):
        plain_copy(broken)
    assert not list((tmp_path / "home" / "decompressed").glob("cut-*"))  # nothing half-written
    assert inner_suffix("a/b.jsonl.bz2") == ".jsonl" and inner_suffix("a.csv") == ".csv"


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
@pytest.mark.parametrize("fmt", ["csv", "coco"])
def test_detection_annotations_read_the_same_compressed(tmp_path, suffix, fmt):
    from transferkit.plugins.object_detection.annotations import detect_format, read_annotations
    from transferkit.plugins.object_detection.testing import make_detection_dataset

    plain = make_detection_dataset(tmp_path / "det", count=4, size=32, fmt=fmt)
    packed = plain.with_name(plain.name + suffix)
    packed.write_bytes(COMPRESSORS[suffix](plain.read_bytes()))
    assert detect_format(packed) == detect_format(plain) == fmt
    read_plain, problems_plain = read_annotations(plain)
    read_packed, problems_packed = read_annotations(packed)
    assert [(a.path, a.labels, a.boxes.tolist()) for a in read_packed] == \
        [(a.path, a.labels, a.boxes.tolist()) for a in read_plain]
    assert len(read_plain) == 4 and problems_packed == problems_plain

    packed.write_bytes(COMPRESSORS[suffix](plain.read_bytes())[:20])  # cut short: named, not a traceback
    with pytest.raises(DataError, match=rf"{packed.name}: not a readable {suffix} file"):
        read_annotations(packed)


def test_problems_in_a_compressed_table_name_the_users_file_and_line(tmp_path, monkeypatch):
    from transferkit.plugins.text_classification.config import DataConfig
    from transferkit.plugins.text_classification.data import read_examples

    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path / "home"))
    table = "text,label\na good film,pos\n,neg\na dull film,neg\n"  # line 3: an empty text
    source = tmp_path / "reviews.csv.bz2"
    source.write_bytes(bz2.compress(table.encode()))
    result = read_examples(str(source), DataConfig(train=str(source)))
    assert [p["path"] for p in result.problems] == [f"{source}:3"]
    assert not any(str(tmp_path / "home") in str(p["path"]) for p in result.problems + result.notes[1:])
