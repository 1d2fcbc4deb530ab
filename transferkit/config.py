"""Typed run configuration: YAML in, frozen dataclasses out.

A run is described by one YAML file. Common sections (`task`, `backbone`,
`stages`, `training`) are shared by every task; every other top-level section
belongs to the task, whose `config_class` (a dataclass) declares them. Loading
converts plain YAML values into those dataclasses field by field, checking
types as it goes, so a mistake is reported with its dotted key, the value
received and what was expected, before anything runs.

This module is the public face of the configuration (plugins, notebooks and
tests import from it); the work is done in:

- transferkit.typed: plain values into typed dataclasses (`convert`, `from_dict`, `check`, `ABSENT`);
- transferkit.config_sections: the shared sections and `RunConfig`;
- transferkit.config_loading: YAML files, `--set` overrides and saved run configs into a `RunConfig`.

It imports the registry (through config_loading), so the registry, the Task
base class and the models import those modules instead of this one.
"""

from transferkit.config_loading import _fill_absent  # noqa: F401  (importable from here, as before the split)
from transferkit.config_loading import (apply_override, build_run_config, config_differences, load_config,
                                        load_saved_config, read_saved_config, read_yaml, same_config, write_config)
from transferkit.config_sections import (COMMON_SECTIONS, BackboneConfig, DataSection, FreezeConfig,
                                         ImageDataSection, RunConfig, StageConfig, TrainingConfig)
from transferkit.errors import ConfigError
from transferkit.fileio import atomic_write_text, load_yaml
from transferkit.typed import ABSENT, PATH, check, convert, from_dict, to_dict
from transferkit.typed import _describe, _fail, _rebase, _type_name  # noqa: F401  (importable from here, as before the split)

__all__ = [
    "ABSENT",
    "PATH",
    "BackboneConfig",
    "COMMON_SECTIONS",
    "ConfigError",
    "DataSection",
    "FreezeConfig",
    "ImageDataSection",
    "RunConfig",
    "StageConfig",
    "TrainingConfig",
    "apply_override",
    "atomic_write_text",
    "build_run_config",
    "check",
    "config_differences",
    "convert",
    "from_dict",
    "load_config",
    "load_saved_config",
    "load_yaml",
    "read_saved_config",
    "read_yaml",
    "same_config",
    "to_dict",
    "write_config",
]
