"""Without the [lightning] extra, suimseg.lightning says which extra to install."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

from suimseg.errors import MissingDependencyError


@pytest.mark.parametrize("missing", ["lightning", "torchmetrics"])
def test_import_without_the_extra_names_it(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name == missing else real_find_spec(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for mod in [
        m for m in sys.modules if m == "suimseg.lightning" or m.startswith("suimseg.lightning.")
    ]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(MissingDependencyError, match=r"pip install 'suimseg\[lightning\]'") as info:
        importlib.import_module("suimseg.lightning")
    if real_find_spec("lightning") is not None:  # else "lightning" is reported first
        assert info.value.package == missing


def test_the_rest_of_suimseg_does_not_import_lightning() -> None:
    code = (
        "import sys, suimseg, suimseg.models, suimseg.engine, suimseg.inference;"
        "from suimseg.models import UNetResAttnV3;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'torchmetrics')];"
        "assert not bad, bad"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
