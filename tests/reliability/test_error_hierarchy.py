"""suimseg.errors: one base class, each error also the builtin that fits."""

from __future__ import annotations

import pytest

import suimseg.errors as errors
from suimseg.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    DatasetNotFoundError,
    HistoryError,
    InputNotFoundError,
    MissingDependencyError,
    NonFiniteLossError,
    RunLockError,
    SUIMSegError,
    WeightsUnavailableError,
)

EXPECTED: dict[type[Exception], type[Exception]] = {
    ConfigError: ValueError,
    DatasetError: ValueError,
    DatasetNotFoundError: FileNotFoundError,
    InputNotFoundError: FileNotFoundError,
    HistoryError: ValueError,
    CheckpointError: ValueError,
    RunLockError: FileExistsError,
    NonFiniteLossError: FloatingPointError,
    WeightsUnavailableError: RuntimeError,
    MissingDependencyError: ModuleNotFoundError,
}


@pytest.mark.parametrize(("error", "builtin"), list(EXPECTED.items()))
def test_each_error_is_a_suimseg_error_and_its_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, SUIMSegError)
    assert issubclass(error, builtin)
    exc = error("x") if error is not MissingDependencyError else error("pkg", "extra", "feature")
    with pytest.raises(builtin):  # plain `except ValueError` etc. keeps working
        raise exc


def test_every_error_is_exported_and_listed_in_the_module_table() -> None:
    assert set(errors.__all__) == {c.__name__ for c in EXPECTED} | {"SUIMSegError"}
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert f"``{name}``" in doc, name
