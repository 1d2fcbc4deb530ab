"""Server-side batching: BatchScheduler, batching_parameters.txt, warmup of batch sizes, `serve` options."""

import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest

from transferkit.cli import main
from transferkit.serving import config_files
from transferkit.serving.batching import BatchingOptions, BatchScheduler, QueueFullError
from transferkit.serving.client import GrpcClient
from transferkit.serving.metrics import PHASES
from transferkit.serving.model_manager import LoadedVersion
from transferkit.serving.server import EmbeddedServer
from transferkit.serving.warmup import read_warmup_requests, write_warmup_file

pytestmark = pytest.mark.timeout(300)


class Recorder:
    """A batch function that doubles its input and remembers the batch sizes it saw."""

    def __init__(self, delay=0.0, fail_on=None):
        self.sizes, self.delay, self.fail_on = [], delay, fail_on
        self.lock = threading.Lock()

    def __call__(self, inputs):
        x = inputs["x"]
        with self.lock:
            self.sizes.append(len(x))
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("bad row")
        time.sleep(self.delay)
        return {"y": x * 2, "rows": np.arange(len(x))}


def _concurrently(scheduler, values, shape=(1,)):
    """Runs one request per value (a number filling `shape`, or an array as it is) from its own thread."""
    results, errors = {}, {}

    def one(i, value):
        x = value if isinstance(value, np.ndarray) else np.full((1, *shape), value, np.float32)
        try:
            results[i] = scheduler.run({"x": x})["y"]
        except Exception as error:  # noqa: BLE001 - recorded for the assertions
            errors[i] = error

    threads = [threading.Thread(target=one, args=(i, v)) for i, v in enumerate(values)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows():
    function = Recorder(delay=0.05)
    scheduler = BatchScheduler(function, BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                                         num_batch_threads=1))
    try:
        results, errors = _concurrently(scheduler, range(16))
    finally:
        scheduler.close()
    assert not errors
    for i in range(16):
        np.testing.assert_array_equal(results[i], [[2.0 * i]])
    assert max(function.sizes) > 1 and sum(function.sizes) == 16  # batched, every row once
    assert all(size <= 8 for size in function.sizes)


def test_a_lone_request_does_not_wait_for_the_timeout():
    scheduler = BatchScheduler(Recorder(), BatchingOptions(max_batch_size=8, batch_timeout_micros=2_000_000))
    try:
        start = time.perf_counter()
        scheduler.run({"x": np.ones((1, 1), np.float32)})
        elapsed = time.perf_counter() - start
    finally:
        scheduler.close()
    assert elapsed < 1.0  # the timeout is 2 s: no other batch runs, so nothing is gained by waiting


def test_allowed_batch_sizes_pad_with_a_real_row_and_drop_the_padding():
    function = Recorder(delay=0.05)
    options = BatchingOptions(max_batch_size=4, batch_timeout_micros=200_000, num_batch_threads=1,
                              allowed_batch_sizes=(2, 4))
    scheduler = BatchScheduler(function, options)
    try:
        results, errors = _concurrently(scheduler, [1, 2, 3])
    finally:
        scheduler.close()
    assert not errors and sorted(float(r[0, 0]) for r in results.values()) == [2.0, 4.0, 6.0]
    assert set(function.sizes) <= {2, 4}  # only allowed shapes ran
    assert scheduler.stats["rows"] == 3 and scheduler.stats["padded_rows"] == sum(function.sizes) - 3


def test_one_bad_request_fails_alone():
    function = Recorder(delay=0.05, fail_on=-1.0)
    scheduler = BatchScheduler(function, BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                                         num_batch_threads=1), isolate=(ValueError,))
    try:
        results, errors = _concurrently(scheduler, [1, 2, -1, 3, 4])
    finally:
        scheduler.close()
    assert list(errors) == [2] and isinstance(errors[2], ValueError)
    assert sorted(results) == [0, 1, 3, 4]


def test_variable_length_inputs_batch_apart_unless_padding_is_on():
    function = Recorder(delay=0.05)
    scheduler = BatchScheduler(function, BatchingOptions(max_batch_size=8, batch_timeout_micros=100_000,
                                                         num_batch_threads=1))
    try:
        results, errors = _concurrently(scheduler, [np.full((1, n), 1.0, np.float32) for n in [2, 3, 2, 3]])
    finally:
        scheduler.close()
    assert not errors and [r.shape[1] for _, r in sorted(results.items())] == [2, 3, 2, 3]  # never padded

    padded = BatchScheduler(Recorder(), BatchingOptions(max_batch_size=8, pad_variable_length_inputs=True))
    try:
        inputs, rows = padded._concatenate([_pending([[1, 2]]), _pending([[5, 6, 7]])])
    finally:
        padded.close()
    assert rows == 2
    np.testing.assert_array_equal(inputs["x"], [[1, 2, 1], [5, 6, 7]])  # padded with the input's first value


def _pending(rows):
    from transferkit.serving.batching import _Pending

    return _Pending({"x": np.asarray(rows, np.float32)})


def test_a_full_queue_is_refused_not_grown():
    function = Recorder(delay=0.3)
    scheduler = BatchScheduler(function, BatchingOptions(max_batch_size=1, batch_timeout_micros=0,
                                                         num_batch_threads=1, max_enqueued_batches=1))
    try:
        results, errors = _concurrently(scheduler, range(6))
    finally:
        scheduler.close()
    assert errors and all(isinstance(e, QueueFullError) for e in errors.values())
    assert "max_enqueued_batches" in str(next(iter(errors.values())))
    assert len(results) + len(errors) == 6


def test_batching_parameters_text_proto_round_trips_and_errors_name_the_file(tmp_path):
    options = BatchingOptions(max_batch_size=16, batch_timeout_micros=3000, num_batch_threads=2,
                              max_enqueued_batches=7, allowed_batch_sizes=(4, 8, 16), pad_variable_length_inputs=True)
    path = tmp_path / "batching_parameters.txt"
    path.write_text(config_files.batching_parameters_text(options))
    assert BatchingOptions.read(path) == options
    # A file written for tensorflow_model_server, with a field this server ignores.
    path.write_text('max_batch_size { value: 4 }\nthread_pool_name { value: "pool" }\n')
    read = BatchingOptions.read(path)
    assert read.max_batch_size == 4 and read.batch_timeout_micros == BatchingOptions().batch_timeout_micros
    path.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    with pytest.raises(ValueError, match=r"batching_parameters.txt.*last allowed_batch_sizes entry must equal"):
        BatchingOptions.read(path)
    path.write_text("max_batch_sise { value: 8 }\n")
    with pytest.raises(ValueError, match=r"batching_parameters.txt.*max_batch_sise"):
        BatchingOptions.read(path)


@pytest.mark.parametrize("kwargs, message", [({"max_batch_size": 0}, "max_batch_size=0"),
                                             ({"batch_timeout_micros": -1}, "batch_timeout_micros=-1"),
                                             ({"allowed_batch_sizes": (4, 2), "max_batch_size": 2}, "[4, 2]")])
def test_options_are_validated_up_front(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        BatchingOptions(**kwargs)


def test_warmup_sizes_cover_every_batch_the_scheduler_can_form():
    assert BatchingOptions(max_batch_size=8).warmup_sizes() == list(range(1, 9))
    assert BatchingOptions(max_batch_size=64).warmup_sizes() == list(range(1, 17)) + [32, 64]
    assert BatchingOptions(max_batch_size=48).warmup_sizes()[-2:] == [32, 48]
    assert BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 8)).warmup_sizes() == [2, 8]


def test_export_writes_batching_parameters_once_and_warmup_at_its_batch_sizes(model_base, tmp_path):
    parameters = model_base / "batching_parameters.txt"
    options = BatchingOptions.read(parameters)
    assert options == config_files.recommended_batching()
    requests = read_warmup_requests(model_base / "shapes" / "1")
    sizes = {request.inputs["images"].tensor_shape.dim[0].size for request in requests}
    assert set(options.warmup_sizes()) <= sizes  # real TF Serving replays these too


def test_served_version_warms_each_batch_size_and_reports_phases(model_base, tmp_path, sample_images):
    base = tmp_path / "base"
    shutil.copytree(model_base / "shapes", base / "m")
    options = BatchingOptions(max_batch_size=4, batch_timeout_micros=20_000, allowed_batch_sizes=(2, 4))
    version = LoadedVersion("m", 1, base / "m" / "1", options)
    try:
        version.warm_up()  # the export's warmup file already holds batches of 2 and 4: nothing more to run
        assert version.warmed_batch_sizes["serving_default"] == []
    finally:
        version.close()
    singles = [r for r in read_warmup_requests(base / "m" / "1") if r.inputs["images"].tensor_shape.dim[0].size == 1]
    write_warmup_file(base / "m" / "1", "m", [{"images": r.inputs["images"].string_val[0]} for r in singles])
    version = LoadedVersion("m", 1, base / "m" / "1", options)
    try:
        version.warm_up()  # an older export, single requests only: the server runs each batch size itself
        assert version.warmed_batch_sizes["serving_default"] == [2, 4]
    finally:
        version.close()

    (base / "batching_parameters.txt").write_text(config_files.batching_parameters_text(options))
    PHASES.reset()
    server = EmbeddedServer(base, grpc_port=0, rest_port=0, batching=options).start()
    try:
        with GrpcClient(server.grpc_address, timeout=60) as client:
            results = {}
            threads = [threading.Thread(target=lambda i=i: results.__setitem__(
                i, client.predict_images("m", [sample_images[i % len(sample_images)]])["probabilities"]))
                for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert len(results) == 8
        with urllib.request.urlopen(server.rest_address + "/monitoring/prometheus/metrics", timeout=30) as page:
            text = page.read().decode()
    finally:
        server.stop()
    snapshot = PHASES.snapshot()
    for phase in ("parse", "decode", "check", "queue", "graph", "encode", "serialize", "handler"):
        assert snapshot["phases"][phase]["count"] >= 8, phase
    assert set(snapshot["batch_sizes"]) <= {2, 4}
    assert 'transferkit:serving:phase_seconds_count{phase="graph"}' in text
    assert "transferkit:serving:batch_size_bucket" in text


def test_serve_reads_the_parameters_file_and_flags_override(tmp_path, capsys, monkeypatch):
    captured = {}

    class FakeServer:
        def __init__(self, base, **kwargs):
            captured.update(kwargs)
            raise SystemExit(0)

    monkeypatch.setattr("transferkit.serving.server.EmbeddedServer", FakeServer)
    path = tmp_path / "batching_parameters.txt"
    path.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 100 }\n")
    with pytest.raises(SystemExit):
        main(["serve", "--model-base", str(tmp_path), "--batching", "--batch-timeout-micros", "7"])
    assert captured["batching"].max_batch_size == 4 and captured["batching"].batch_timeout_micros == 7
    captured.clear()
    with pytest.raises(SystemExit):
        main(["serve", "--model-base", str(tmp_path)])
    assert captured["batching"] is None
    path.write_text("max_batch_size { value: 0 }\n")
    assert main(["serve", "--model-base", str(tmp_path), "--batching-parameters-file", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(path) in error and "max_batch_size" in error
    assert main(["serve", "--model-base", str(tmp_path), "--batching-parameters-file", str(tmp_path / "no")]) == 2
    assert "file not found" in capsys.readouterr().err
