"""Fuzzing the binary readers (issue 31): any bytes give a result or one clear error, never a crash, a
traceback of another type, or unbounded memory. Few examples each, so the suite stays fast.

Pack records are not fuzzed here: a shard is checked against its recorded sha256 before any record is
parsed (tests/reliability/test_faults_round2.py, fault 24_07), and TensorFlow's own error for a garbage
record can carry its bytes into a message Python then fails to decode."""

import gzip
import json
import resource
import struct

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from transferkit.errors import TransferkitError  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _wav_header(rate: int, channels: int, bits: int, data_size: int) -> bytes:
    block = (channels * bits // 8) & 0xFFFF
    return (b"RIFF" + struct.pack("<I", (36 + data_size) & 0xFFFFFFFF) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits) + b"data"
        + struct.pack("<I", data_size))


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@FUZZ
@given(rate=st.integers(0, 2**32 - 1), channels=st.integers(0, 65535), bits=st.sampled_from([0, 8, 16, 24, 32, 7]),
       declared=st.integers(0, 2**32 - 1), body=st.binary(max_size=512))
def test_wav_reader_gives_samples_or_a_value_error(rate, channels, bits, declared, body):
    from transferkit.plugins.audio_classification.data import read_wav

    before = _max_rss_mb()
    try:
        samples, read_rate = read_wav(_wav_header(rate, channels, bits, declared) + body)
    except ValueError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert 1000 <= read_rate <= 384000 and samples.ndim == 1 and len(samples) <= len(body)
    assert _max_rss_mb() - before < 200


@FUZZ
@given(data=st.binary(max_size=1024))
def test_wav_reader_on_arbitrary_bytes(data):
    from transferkit.plugins.audio_classification.data import read_wav

    for payload in (data, b"RIFF" + data):
        try:
            read_wav(payload)
        except ValueError:
            pass


@FUZZ
@given(head=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF", b""]),
       body=st.binary(max_size=600))
def test_image_header_check_gives_a_size_or_a_problem(tmp_path_factory, head, body):
    from transferkit.vision.streaming import check_image_files

    path = tmp_path_factory.mktemp("img") / "x.png"
    path.write_bytes(head + body)
    checked = check_image_files([str(path)], [0], max_pixels=10_000_000, workers=1)
    assert len(checked.paths) + len(checked.problems) == 1
    for problem in checked.problems:
        assert problem["reason"] and "\n" not in problem["reason"]


@FUZZ
@given(data=st.binary(max_size=2048), compressed=st.booleans())
def test_compressed_image_tables_give_samples_or_a_data_error(tmp_path_factory, data, compressed):
    from transferkit.vision.samples import list_samples

    folder = tmp_path_factory.mktemp("csv")
    path = folder / ("list.csv.gz" if compressed else "list.csv")
    raw = gzip.compress(data) if compressed and data[:1] != b"\x00" else data
    path.write_bytes(raw)
    try:
        samples, problems = list_samples(path)
    except TransferkitError as error:
        assert str(error).startswith(str(path)) or str(path) in str(error)
    else:
        assert isinstance(samples, list) and isinstance(problems, list)


@FUZZ
@given(data=st.binary(min_size=0, max_size=4096), signature=st.one_of(
    st.binary(max_size=200), st.just(None),
    st.dictionaries(st.sampled_from(["transferkit", "sha256", "bytes", "labels", "task", "preprocessor"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.text(max_size=5))))))
def test_edge_files_are_vouched_for_before_any_interpreter(tmp_path_factory, data, signature):
    from transferkit.serving.edge_export import EdgeExportError, read_signature

    folder = tmp_path_factory.mktemp("edge")
    model = folder / "m.tflite"
    model.write_bytes(data)
    if isinstance(signature, bytes):
        (folder / "m.signature.json").write_bytes(signature)
    elif signature is not None:
        (folder / "m.signature.json").write_text(json.dumps(signature))
    with pytest.raises(EdgeExportError):  # no such bytes are a model this signature vouches for
        read_signature(model)
