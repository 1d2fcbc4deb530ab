"""Progress bars: on a terminal after a couple of seconds, never in pipes or with --quiet."""

import io
import time

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
