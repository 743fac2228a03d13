"""The registry of training methods: name -> the module that declares its stages.

The config check, the CLI, the experiment grid and the tests all read `METHODS`; the engine
asks `method_stages` for what to run. A method module defines `stages(config) -> list[Stage]`
(see `mona.methods.base`). Modules are imported on first use, so reading the names is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mona.config import Config
    from mona.methods.base import Stage

METHODS = {
    "supervised": "mona.methods.supervised",
    "mean_teacher": "mona.methods.mean_teacher",
    "mona": "mona.methods.mona",
    "unimatch": "mona.methods.unimatch",
    "bcp": "mona.methods.bcp",
    "abd": "mona.methods.abd",
}


def method_stages(config: Config) -> list[Stage]:
    """The stages `config.method` trains, in order."""
    return importlib.import_module(METHODS[config.method]).stages(config)
