"""`transferkit lr-find`: the learning-rate range test for one stage of a config.

The stage's freeze plan is applied to the pretrained backbone (or to a
trained run's weights, for a later stage), then the learning rate grows
exponentially from `min_lr` to `max_lr` over `steps` training steps with the
stage's optimizer. The smoothed loss against the rate shows where training
starts to work and where it diverges; the suggestion is the rate of the
steepest descent of the smoothed loss, a common, conservative choice.

Example:

```python
from transferkit.lr_find import find_learning_rate

result = find_learning_rate(config, stage_index=0, output="runs/lr_find")
result["suggested_learning_rate"]
```
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from transferkit.config import RunConfig, check
from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_path, atomic_write_text
from transferkit.streaming import pipeline_options

SMOOTHING = 0.9  # exponential moving average of the loss, bias-corrected
DIVERGENCE = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum


def _suggest(rates: list[float], smoothed: list[float]) -> tuple[float | None, float | None]:
    """(steepest-descent rate, minimum-loss rate / 10), or Nones when the loss never clearly fell.

    The first tenth of the sweep is skipped (the moving average is still
    settling there), and only the descent before the lowest loss counts:
    what follows the minimum is the divergence, not a recommendation.
    """
    skip = max(1, len(rates) // 10)
    if len(rates) - skip < 5:
        return None, None
    logs = [math.log10(r) for r in rates]
    lowest = min(range(skip, len(smoothed)), key=smoothed.__getitem__)
    if lowest - skip < 2:
        return None, None
    slopes = {i: (smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(skip, lowest)}
    steepest = min(slopes, key=slopes.__getitem__)
    # A minimum at the end of the sweep is no minimum: the loss was still falling at max_lr.
    return rates[steepest], (rates[lowest] / 10 if lowest < len(rates) - 1 else None)


def find_learning_rate(config: RunConfig, stage_index: int, output: str | os.PathLike, steps: int = 200,
                       min_lr: float = 1e-7, max_lr: float = 1.0, weights: str | os.PathLike | None = None,
                       log=print) -> dict[str, Any]:
    """Runs the range test for `config.stages[stage_index]`; writes lr_find.json and lr_find.png into `output`."""
    import keras

    from transferkit.models.feature_cache import FeatureCache
    from transferkit.models.freezing import apply_freeze_plan
    from transferkit.models.schedules import build_optimizer
    from transferkit.runner import load_model_weights, prepare_run, use_feature_cache

    check(0 <= stage_index < len(config.stages), "--stage", stage_index + 1,
          f"a stage number in 1..{len(config.stages)}")
    check(steps >= 10, "--steps", steps, "an integer >= 10")
    check(math.isfinite(max_lr) and 0 < min_lr < max_lr <= 100, "--min-lr/--max-lr", [min_lr, max_lr],
          "finite rates with 0 < min-lr < max-lr <= 100")
    stage = config.stages[stage_index]
    task, data, backbone, model = prepare_run(config)
    if weights is not None:
        path = Path(weights)
        path = path / "best.weights.h5" if path.is_dir() else path
        if not path.is_file():
            raise TransferkitError(f"{weights}: no best.weights.h5; expected a finished run folder or a .weights.h5")
        try:
            load_model_weights(model, path)
        except (ValueError, OSError) as error:  # Keras: "N objects could not be loaded"; h5py: not an HDF5 file
            first = " ".join(str(error).split())[:200]
            raise TransferkitError(f"{weights}: these weights do not fit this config's model (a run of another "
                                   f"task, backbone or class list?): {first}") from None
    apply_freeze_plan(backbone, stage.freeze)
    split = task.cache_split(model, backbone)
    use_cache, _ = use_feature_cache(config, stage, task, data, split)
    if use_cache:
        train_cache = FeatureCache.compute(split.extractor, data.train_plain)
        dataset = train_cache.dataset(task.batch_size(), shuffle=True, seed=config.training.seed)
        dataset, trained = dataset.with_options(pipeline_options(config.training.data_autotune)), split.trainable
    else:
        dataset, trained = data.train, model
    factor = (max_lr / min_lr) ** (1.0 / (steps - 1))
    # The rate before step i is min_lr * factor**i: exponential "decay" with a rate above 1.
    sweep = keras.optimizers.schedules.ExponentialDecay(min_lr, decay_steps=1, decay_rate=factor)
    optimizer = build_optimizer(stage, steps, trained.trainable_variables, schedule=sweep)
    task.compile(trained, optimizer)
    rates, losses, smoothed = [], [], []
    average, best = 0.0, math.inf

    class Sweep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            rates.append(min_lr * factor ** len(rates))

        def on_train_batch_end(self, batch, logs=None):
            nonlocal average, best
            loss = float((logs or {}).get("loss", math.nan))
            losses.append(loss)
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            value = average / (1 - SMOOTHING ** len(losses))
            smoothed.append(value)
            best = min(best, value)
            if not math.isfinite(loss) or value > DIVERGENCE * best or len(losses) >= steps:
                self.model.stop_training = True

    # Keras counts the loss per epoch as a running mean; one step per "epoch" gives each step's own loss.
    trained.fit(dataset.repeat(), steps_per_epoch=1, epochs=steps, callbacks=[Sweep()], verbose=0,
                shuffle=False)  # the dataset shuffles itself
    count = len(smoothed)
    rates = rates[:count]
    steepest, minimum = _suggest(rates, smoothed)
    result = {"stage": stage.name, "stage_number": stage_index + 1, "feature_cache": use_cache,
              "steps_run": count, "min_lr": min_lr, "max_lr": max_lr, "optimizer": stage.optimizer,
              "configured_learning_rate": stage.learning_rate,
              "suggested_learning_rate": steepest, "min_loss_learning_rate_div10": minimum,
              "learning_rates": rates, "losses": losses, "smoothed_losses": smoothed,
              "weights": str(weights) if weights else None}
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "lr_find.json", json.dumps(result, indent=2))
    _plot(result, output / "lr_find.png")
    log(f"stage {stage_index + 1} '{stage.name}': {count} steps from {min_lr:g} to {rates[-1]:.3g}; "
        f"suggested learning rate {_fmt(steepest)} (steepest descent; minimum loss / 10: "
        f"{'none, the loss still fell at --max-lr' if steepest and minimum is None else _fmt(minimum)}; "
        f"configured: {stage.learning_rate:g})")
    return result


def _fmt(value: float | None) -> str:
    return "none (the loss did not fall; try more --steps or another range)" if value is None else f"{value:.2g}"


def _plot(result: dict[str, Any], path: Path) -> None:
    from transferkit.reporting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["learning_rates"], result["losses"], color="lightgray", label="loss")
    ax.plot(result["learning_rates"], result["smoothed_losses"], color="tab:blue", label="smoothed loss")
    if result["suggested_learning_rate"]:
        ax.axvline(result["suggested_learning_rate"], color="tab:green", linestyle="--",
                   label=f"suggested {result['suggested_learning_rate']:.2g}")
    ax.axvline(result["configured_learning_rate"], color="tab:orange", linestyle=":",
               label=f"configured {result['configured_learning_rate']:g}")
    ax.set_xscale("log")
    finite = [v for v in result["smoothed_losses"] if math.isfinite(v)]
    if finite:
        # From the lowest loss to a little above where the sweep started: the divergence is cut off.
        start = max(finite[:max(1, len(finite) // 10)])
        ax.set_ylim(min(finite) * 0.9, min(max(finite), start * 1.3))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"Learning-rate range test, stage {result['stage_number']} '{result['stage']}'")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
