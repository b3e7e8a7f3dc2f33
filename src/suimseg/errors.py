"""Named exceptions raised by suimseg.

Every error derives from :class:`SUIMSegError` *and* from the builtin exception that
fits, so plain ``except ValueError`` / ``except FileNotFoundError`` clauses keep working.
Messages state the parameter or file, what was expected, what was received and the fix.

===========================  =======================  ===========================================
error                        also a                   raised for
===========================  =======================  ===========================================
``SUIMSegError``             ``Exception``            (base class; catch-all for suimseg errors)
``ConfigError``              ``ValueError``           invalid arguments or configuration
``DatasetError``             ``ValueError``           unreadable, corrupt or malformed data files
``DatasetNotFoundError``     ``FileNotFoundError``    a missing dataset root or split folder
``InputNotFoundError``       ``FileNotFoundError``    a missing image, weights or input file
``CheckpointError``          ``ValueError``           unusable checkpoint or weight files
``HistoryError``             ``ValueError``           a run's unreadable history file
``RunLockError``             ``FileExistsError``      an output folder in use or holding a run
``NonFiniteLossError``       ``FloatingPointError``   a NaN/inf training loss
``WeightsUnavailableError``  ``RuntimeError``         pre-trained weights that cannot be fetched
``MissingDependencyError``   ``ModuleNotFoundError``  an optional package that is not installed
===========================  =======================  ===========================================

Example:
    >>> from suimseg.errors import DatasetError, SUIMSegError
    >>> issubclass(DatasetError, ValueError) and issubclass(DatasetError, SUIMSegError)
    True
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "DatasetNotFoundError",
    "HistoryError",
    "InputNotFoundError",
    "MissingDependencyError",
    "NonFiniteLossError",
    "RunLockError",
    "SUIMSegError",
    "WeightsUnavailableError",
]


class SUIMSegError(Exception):
    """Base class of every exception raised on purpose by suimseg."""


class ConfigError(SUIMSegError, ValueError):
    """An argument or configuration value is invalid."""


class DatasetError(SUIMSegError, ValueError):
    """A dataset file or folder is malformed (bad pairing, unreadable or corrupt file)."""


class DatasetNotFoundError(SUIMSegError, FileNotFoundError):
    """A dataset root or split folder does not exist where it was expected."""


class InputNotFoundError(SUIMSegError, FileNotFoundError):
    """A file or folder passed as input (an image, a weights file) does not exist."""


class CheckpointError(SUIMSegError, ValueError):
    """A checkpoint or weight file cannot be used (corrupt, wrong format, mismatched keys)."""


class HistoryError(SUIMSegError, ValueError):
    """A run's ``history.jsonl`` / ``history.csv`` has a malformed line (file and line named)."""


class RunLockError(SUIMSegError, FileExistsError):
    """An output folder is locked by a live run, or holds a previous run's ``last.pt``."""


class NonFiniteLossError(SUIMSegError, FloatingPointError):
    """Training produced a NaN or infinite loss (the message names the epoch and step)."""


class WeightsUnavailableError(SUIMSegError, RuntimeError):
    """Pre-trained weights were requested but could not be obtained (e.g. offline)."""


class MissingDependencyError(SUIMSegError, ModuleNotFoundError):
    """An optional dependency needed for a feature is not installed.

    Args:
        package: The importable module that is missing.
        extra: The suimseg extra that installs it.
        feature: What the user tried to do.
    """

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the optional package {package!r}, which is not installed. "
            f"Install it with: pip install 'suimseg[{extra}]'",
            name=package,
        )
        self.package = package
        self.extra = extra
        self.feature = feature
