"""transferkit lr-find: an exponential sweep, its plot and a suggestion."""

import json
import math

import pytest
import yaml

from transferkit.cli import main
from transferkit.lr_find import _suggest
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config


def test_sweep_writes_rates_losses_and_a_plot(tmp_path, capsys):
    shapes = make_image_folder(tmp_path / "shapes", per_class=8, size=32)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(shapes)))
    assert main(["lr-find", str(config), "--stage", "2", "--steps", "30", "--min-lr", "1e-5", "--max-lr", "10",
                 "--output", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "lr_find.json").read_text())
    rates = result["learning_rates"]
    assert result["stage"] == "finetune" and result["feature_cache"] is False
    assert len(rates) == len(result["losses"]) == result["steps_run"] <= 30
    assert rates[0] == pytest.approx(1e-5)
    ratios = {round(b / a, 6) for a, b in zip(rates, rates[1:])}
    assert ratios == {round(1e6 ** (1 / 29), 6)}  # one constant factor: exponential
    assert (tmp_path / "out" / "lr_find.png").stat().st_size > 1000
    assert "suggested learning rate" in capsys.readouterr().out
    assert main(["lr-find", str(config), "--stage", "3", "--output", str(tmp_path / "bad")]) == 2
    assert "--stage: expected a stage number in 1..2, received 3" in capsys.readouterr().err


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    rates = [10 ** (-6 + i * 0.1) for i in range(60)]
    # Flat, a steep fall centred at 1e-3, a minimum at 1e-2, then divergence.
    losses = [2.0 - 1.5 / (1 + math.exp(-(math.log10(r) + 3) * 4)) for r in rates[:41]]
    losses += [losses[-1] + 0.2 * i for i in range(1, 20)]
    steepest, minimum = _suggest(rates, losses)
    assert steepest == pytest.approx(1e-3, rel=0.3)
    assert minimum == pytest.approx(rates[40] / 10)
    assert _suggest(rates[:5], losses[:5]) == (None, None)  # too few steps
    falling = [2.0 - 0.02 * i for i in range(60)]
    assert _suggest(rates, falling)[1] is None  # no minimum inside the sweep
    assert _suggest(rates, [1.0 + 0.01 * i for i in range(60)]) == (None, None)  # the loss never fell
