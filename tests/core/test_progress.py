"""Progress bars: on a terminal after a couple of seconds, never in pipes or with --quiet."""

import io
import time

import pytest

from transferkit import progress as progress_lib


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_slow_step_on_a_terminal_shows_counts_and_eta(monkeypatch):
    monkeypatch.delenv(progress_lib.QUIET_ENV, raising=False)
    monkeypatch.setattr(progress_lib, "DELAY_SECONDS", 0.0)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)

    def slow():
        for i in range(3):
            time.sleep(0.6)
            yield i

    assert list(progress_lib.progress(slow(), "checking image headers", total=3, unit="file")) == [0, 1, 2]
    shown = terminal.getvalue()
    assert "checking image headers" in shown and "/3" in shown and "file" in shown


def test_quiet_and_pipes_show_nothing(monkeypatch, capsys):
    items = list(range(5))
    monkeypatch.setenv(progress_lib.QUIET_ENV, "1")
    assert progress_lib.progress(items, "x") is items  # not even wrapped
    monkeypatch.delenv(progress_lib.QUIET_ENV)
    monkeypatch.setattr(progress_lib, "DELAY_SECONDS", 0.0)
    assert list(progress_lib.progress(items, "decoding images")) == items  # stderr here is not a terminal
    assert "decoding images" not in capsys.readouterr().err


def test_quiet_flag_on_every_command():
    from transferkit.cli import _add_verbose, build_parser

    parser = build_parser()
    _add_verbose(parser)
    args = parser.parse_args(["data", "pack", "a", "b", "--quiet", "--verbose"])
    assert args.quiet and args.verbose


def test_a_dataset_of_unknown_length_gets_a_bar_without_a_total(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv(progress_lib.QUIET_ENV, raising=False)
    dataset = tf.data.Dataset.range(5).filter(lambda x: x % 2 == 0)  # cardinality unknown
    assert progress_lib.dataset_length(dataset) is None
    assert [int(x) for x in progress_lib.progress(dataset, "evaluating")] == [0, 2, 4]
    assert progress_lib.dataset_length(tf.data.Dataset.range(7).batch(2)) == 4


def test_data_pack_shows_images_packed_and_export_its_steps(tmp_path, monkeypatch):
    from transferkit.plugins.image_classification.testing import make_image_folder
    from transferkit.vision.packing import pack_images

    monkeypatch.delenv(progress_lib.QUIET_ENV, raising=False)
    monkeypatch.setattr(progress_lib, "DELAY_SECONDS", 0.0)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    images = make_image_folder(tmp_path / "images", per_class=4, size=16)
    pack = pack_images(images, tmp_path / "pack", val_split=0.25, seed=0)
    shown = terminal.getvalue()
    assert pack.splits["train"].count + pack.splits["val"].count == 12
    # A bar per split, counting images (fast here, so only its first frame is drawn before it clears).
    assert "packing train" in shown and f"/{pack.splits['train'].count} " in shown
    assert "packing val" in shown and "image/s" in shown

    monkeypatch.setenv(progress_lib.QUIET_ENV, "1")
    bar = progress_lib.progress_bar(3, "export m/1", unit="step")
    bar.update(1), bar.set_postfix_str("reload and parity check"), bar.close()  # a silent no-op when quiet
    assert "export m/1" not in terminal.getvalue()


def test_compare_log_gives_an_estimate_once_a_cell_has_run():
    from transferkit.compare import _eta

    assert _eta([], 5) == ""
    assert _eta([2.0, 4.0], 5) == " (2 trained in 6.0 min; about 15 min left)"


def test_a_notebook_gets_the_widget_bar_shown_although_stderr_is_no_terminal(monkeypatch):
    pytest.importorskip("ipywidgets", reason="the notebook bar is an ipywidgets widget")
    from tqdm.notebook import tqdm as notebook_bar

    monkeypatch.delenv(progress_lib.QUIET_ENV, raising=False)
    monkeypatch.setattr(progress_lib, "in_notebook", lambda: True)
    assert progress_lib._bar_class() == (notebook_bar, False)
    monkeypatch.setattr(progress_lib, "in_notebook", lambda: False)
    assert progress_lib._bar_class()[1] is None  # the terminal bar: off when stderr is not a terminal
