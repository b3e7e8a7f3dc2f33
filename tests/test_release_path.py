"""The release path: CI and release workflows, the tag/version/changelog check, the floor.

GitHub Actions cannot run here, so these tests pin down what the workflows would do:

- ``.github/workflows/ci.yml`` runs the same install, lint, type, docs and test commands as
  ``.ci/run`` (and the README's test command), on every Python the package declares; any
  drift between them fails here.
- ``.github/workflows/release.yml`` runs only for ``v*`` tags, checks the tag against the
  package version and CHANGELOG.md, builds and ``twine check``s, and publishes with PyPI
  trusted publishing from a ``pypi`` environment, after all of CI.
- ``scripts/check_release_version.py`` accepts an agreeing tag, version and changelog and
  rejects each kind of mismatch; ``scripts/floor_requirements.py`` derives the tested floor
  from ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import suimseg

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".github" / "workflows" / "ci.yml"
RELEASE = ROOT / ".github" / "workflows" / "release.yml"
CI_RUN = ROOT / ".ci" / "run"
SCRIPTS = ROOT / "scripts"

if not CI_RUN.exists():  # an unpacked sdist has tests/ but not .ci/, .github/, scripts/
    pytest.skip("needs a git checkout (.ci/run, .github/workflows)", allow_module_level=True)

# Lines of .ci/run / workflow steps that are part of the contract: installs and checks.
_CHECK_TOOLS = ("pip", "ruff", "mypy", "mkdocs")


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses/typing look the module up by name
    spec.loader.exec_module(module)
    return module


def _workflow(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    # YAML 1.1 reads the bare key `on` as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def _commands(lines: list[str]) -> list[tuple[str, ...]]:
    """The install/check commands among shell lines, tokenised (quoting-insensitive)."""
    out = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split("&&"):
            tokens = tuple(shlex.split(part.strip()))
            if not tokens:
                continue
            if tokens[0] in _CHECK_TOOLS or tokens[:3] == ("python", "-m", "pytest"):
                out.append(tokens)
    return out


def _without_index(cmd: tuple[str, ...]) -> tuple[str, ...]:
    """Drop ``--index-url URL`` (CI takes the same pinned torch from the CPU index)."""
    out = list(cmd)
    if "--index-url" in out:
        i = out.index("--index-url")
        assert out[i + 1] == "https://download.pytorch.org/whl/cpu", out
        del out[i : i + 2]
    return tuple(out)


def _job_commands(workflow: dict[str, Any], job: str) -> list[tuple[str, ...]]:
    lines: list[str] = []
    for step in workflow["jobs"][job]["steps"]:
        if "run" in step:
            lines += step["run"].splitlines()
    return [_without_index(c) for c in _commands(lines)]


# --- ci.yml ----------------------------------------------------------------------------


def test_ci_runs_the_same_commands_as_ci_run() -> None:
    ci = _workflow(CI)
    ci_run = _commands(CI_RUN.read_text(encoding="utf-8").splitlines())
    assert len(ci_run) >= 7, f".ci/run changed shape; parsed only {ci_run}"
    checks = _job_commands(ci, "checks")
    test = _job_commands(ci, "test")

    # Every command of .ci/run runs in CI, and CI runs no check .ci/run does not.
    assert set(checks) | set(test) == set(ci_run)
    # Within each job, in .ci/run's order.
    assert checks == [c for c in ci_run if c in checks]
    assert test == [c for c in ci_run if c in test]
    # The checks job lints, type-checks and builds the docs; the test job runs pytest.
    assert {c[0] for c in checks} >= {"ruff", "mypy", "mkdocs"}
    assert test[-1][:3] == ("python", "-m", "pytest")
    # The torch install is pinned, the same pins in both.
    pins = [c for c in ci_run if c[:2] == ("pip", "install") and c[2].startswith("torch")]
    assert len(pins) == 1, pins
    assert [a.split("==")[0] for a in pins[0][2:]] == ["torch", "torchvision"], pins
    assert all(re.fullmatch(r"(torch|torchvision)==[\d.]+", a) for a in pins[0][2:]), pins


def test_ci_tests_every_declared_python_and_the_readme_command() -> None:
    ci = _workflow(CI)
    matrix = ci["jobs"]["test"]["strategy"]["matrix"]["python-version"]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.findall(r"Programming Language :: Python :: (3\.\d+)\"", pyproject)
    assert sorted(matrix) == sorted(declared) == ["3.10", "3.11", "3.12"]

    # The README's test line runs in the test job, in order (the job may add the optional
    # integrations and the benchmark tests around it), and ends with the README's pytest.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (line,) = [ln for ln in readme.splitlines() if "python -m pytest -q" in ln and "&&" in ln]
    job = _job_commands(ci, "test")
    wanted = _commands([line])
    it = iter(job)
    assert all(any(c == w for c in it) for w in wanted), (wanted, job)
    assert ("python", "-m", "pytest", "-q") in job

    # Runs on pushes to main, on pull requests, and when the release workflow calls it.
    assert {"push", "pull_request", "workflow_call"} <= set(ci["on"])
    assert ci["on"]["push"]["branches"] == ["main"]
    assert ci["permissions"] == {"contents": "read"}


def test_ci_runs_the_floor_and_package_checks() -> None:
    jobs = _workflow(CI)["jobs"]
    floor = [s for s in jobs["floor"]["steps"] if "run" in s]
    assert [s["run"].strip() for s in floor] == ["scripts/check_floor.sh"]
    assert floor[0]["env"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    # The floor runs on the lowest declared Python.
    setup = [
        s for s in jobs["floor"]["steps"] if s.get("uses", "").startswith("actions/setup-python")
    ]
    assert setup[0]["with"]["python-version"] == "3.10"
    package = "\n".join(s.get("run", "") for s in jobs["package"]["steps"])
    assert "python -m build" in package
    assert "twine check --strict dist/*" in package


# --- release.yml -----------------------------------------------------------------------


def test_release_runs_only_on_version_tags() -> None:
    release = _workflow(RELEASE)
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {"contents": "read"}


def test_release_checks_builds_and_publishes_with_trusted_publishing() -> None:
    jobs = _workflow(RELEASE)["jobs"]
    assert set(jobs) == {"version", "ci", "build", "publish"}

    version = "\n".join(s.get("run", "") for s in jobs["version"]["steps"])
    assert 'python scripts/check_release_version.py "$GITHUB_REF_NAME"' in version

    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["ci"]["needs"] == "version"

    assert jobs["build"]["needs"] == "version"
    build = "\n".join(s.get("run", "") for s in jobs["build"]["steps"])
    assert "python -m build" in build
    assert "twine check --strict dist/*" in build
    assert 'test -f "dist/suimseg-${version}-py3-none-any.whl"' in build
    assert any(
        s.get("uses", "").startswith("actions/upload-artifact") for s in jobs["build"]["steps"]
    )

    publish = jobs["publish"]
    assert set(publish["needs"]) == {"build", "ci"}  # nothing is published unless CI passed
    assert "startsWith(github.ref, 'refs/tags/v')" in publish["if"]
    assert publish["environment"]["name"] == "pypi"
    assert publish["permissions"] == {"id-token": "write"}
    uses = [s["uses"] for s in publish["steps"]]
    assert uses[-1].startswith("pypa/gh-action-pypi-publish@")
    assert not any("password" in s.get("with", {}) for s in publish["steps"])  # no API token
    # Only the publish job may mint an OIDC token.
    others = [j for name, j in jobs.items() if name != "publish"]
    assert not any("id-token" in j.get("permissions", {}) for j in others)


# --- scripts/check_release_version.py --------------------------------------------------


def _run_check(tag: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "check_release_version.py"), tag, "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def release_copy(tmp_path: Path) -> Path:
    """A copy of the real version file and changelog, released as 9.8.7."""
    (tmp_path / "src" / "suimseg").mkdir(parents=True)
    shutil.copy(ROOT / "src" / "suimseg" / "_version.py", tmp_path / "src" / "suimseg")
    version_file = tmp_path / "src" / "suimseg" / "_version.py"
    text = version_file.read_text(encoding="utf-8")
    version_file.write_text(
        re.sub(r'__version__ = "[^"]+"', '__version__ = "9.8.7"', text), encoding="utf-8"
    )
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    # The release move: the [Unreleased] entries now sit under the dated version.
    changelog = changelog.replace(
        "## [Unreleased]", "## [Unreleased]\n\n## [9.8.7] - 2026-01-02", 1
    )
    (tmp_path / "CHANGELOG.md").write_text(changelog, encoding="utf-8")
    return tmp_path


def test_release_check_reads_the_real_files() -> None:
    check = _load_script("check_release_version")
    assert check.package_version(ROOT) == suimseg.__version__
    sections = check.changelog_sections((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
    assert "Unreleased" in sections

    # The real tag for the real version: only a missing CHANGELOG section may stop it.
    proc = _run_check(f"v{suimseg.__version__}", ROOT)
    if suimseg.__version__ in sections:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1
        assert proc.stderr.count("release check:") == 1, proc.stderr
        assert f"no '## [{suimseg.__version__}] - YYYY-MM-DD' section" in proc.stderr


def test_release_check_passes_when_tag_version_and_changelog_agree(release_copy: Path) -> None:
    proc = _run_check("v9.8.7", release_copy)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
    assert _run_check("refs/tags/v9.8.7", release_copy).returncode == 0


def test_release_check_rejects_a_tag_that_is_not_the_package_version(release_copy: Path) -> None:
    proc = _run_check("v9.8.8", release_copy)
    assert proc.returncode == 1
    assert "says 9.8.8 but src/suimseg/_version.py says __version__ = '9.8.7'" in proc.stderr
    assert "CHANGELOG.md has no '## [9.8.8] - YYYY-MM-DD' section" in proc.stderr


def test_release_check_rejects_missing_undated_or_empty_changelog_sections(
    release_copy: Path,
) -> None:
    changelog = release_copy / "CHANGELOG.md"
    good = changelog.read_text(encoding="utf-8")

    changelog.write_text(good.replace("## [9.8.7] - 2026-01-02", "## [9.8.6] - 2026-01-02"))
    proc = _run_check("v9.8.7", release_copy)
    assert proc.returncode == 1
    assert "no '## [9.8.7] - YYYY-MM-DD' section" in proc.stderr
    assert "found: Unreleased, 9.8.6" in proc.stderr

    changelog.write_text(good.replace("## [9.8.7] - 2026-01-02", "## [9.8.7]"))
    proc = _run_check("v9.8.7", release_copy)
    assert proc.returncode == 1
    assert "expected '## [9.8.7] - YYYY-MM-DD'" in proc.stderr

    changelog.write_text(good.replace("2026-01-02", "2026-01-02\n\n## [9.8.6] - 2025-01-01"))
    proc = _run_check("v9.8.7", release_copy)
    assert proc.returncode == 1
    assert "section [9.8.7] lists no changes" in proc.stderr


@pytest.mark.parametrize("tag", ["9.8.7", "v9.8", "v9.8.7-rc.1", "v09.8.7", "release-9.8.7"])
def test_release_check_rejects_malformed_tags(release_copy: Path, tag: str) -> None:
    proc = _run_check(tag, release_copy)
    assert proc.returncode == 1
    assert "expected 'v' + a version such as v0.2.0" in proc.stderr


def test_release_check_accepts_pre_releases_pypi_does_not_respell(release_copy: Path) -> None:
    version_file = release_copy / "src" / "suimseg" / "_version.py"
    version_file.write_text('__version__ = "9.8.7rc1"\n')
    changelog = release_copy / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace("[9.8.7]", "[9.8.7rc1]"))
    assert _run_check("v9.8.7rc1", release_copy).returncode == 0


# --- scripts/floor_requirements.py and check_floor.sh ----------------------------------


def test_floor_is_the_declared_lower_bounds() -> None:
    floor = _load_script("floor_requirements")
    pyproject = ROOT / "pyproject.toml"
    declared = floor.declared_dependencies(pyproject)
    pins = floor.floor_pins(declared)
    assert [p.split("==")[0] for p in pins] == [
        "torch",
        "torchvision",
        "numpy",
        "pillow",
        "typing-extensions",
    ]
    assert [p.replace("==", ">=") for p in pins] == declared
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "floor_requirements.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.split() == pins


# APIs of the source that set the torch floor (found by running scripts/check_floor.sh:
# with torch 2.2 the trainer failed on torch.amp.GradScaler). Add a line when you use an
# API newer than the floor, and raise the floor.
_TORCH_API_FLOORS = {"torch.amp.GradScaler": (2, 3), "weights_only=True, mmap=": (2, 1)}


def test_declared_torch_floor_has_every_api_the_source_uses() -> None:
    floor = _load_script("floor_requirements")
    pins = dict(
        p.split("==")
        for p in floor.floor_pins(floor.declared_dependencies(ROOT / "pyproject.toml"))
    )
    declared = tuple(int(x) for x in pins["torch"].split(".")[:2])
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py"))
    too_new = [
        f"{api} needs torch>={'.'.join(map(str, need))}"
        for api, need in _TORCH_API_FLOORS.items()
        if api in source and need > declared
    ]
    assert "torch.amp.GradScaler" in source  # the table is not stale
    assert not too_new, f"pyproject.toml declares torch>={pins['torch']}: {too_new}"


def test_floor_parser_without_tomllib_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    floor = _load_script("floor_requirements")
    pyproject = ROOT / "pyproject.toml"
    with_toml = floor.declared_dependencies(pyproject)
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10
    assert floor.declared_dependencies(pyproject) == with_toml


@pytest.mark.parametrize(
    ("deps", "message"),
    [
        (["torch>=2.2", "torchvision>=0.18"], "never released together"),
        (["torch>=2.3", "torchvision>=0.17"], "never released together"),
        (["numpy"], "expected exactly one lower bound"),
        (["numpy>=1.24,<3"], "expected exactly one lower bound"),
    ],
)
def test_floor_rejects_untestable_floors(deps: list[str], message: str) -> None:
    floor = _load_script("floor_requirements")
    with pytest.raises(floor.FloorError, match=message):
        floor.floor_pins(deps)


def test_check_floor_script_is_valid_and_its_tests_exist() -> None:
    script = SCRIPTS / "check_floor.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    m = re.search(r"FLOOR_TESTS=\$\{FLOOR_TESTS:-(?P<paths>[^}]+)\}", script.read_text())
    assert m is not None
    paths = m["paths"].split()
    assert len(paths) >= 5
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"scripts/check_floor.sh selects tests that no longer exist: {missing}"


# --- install wording -------------------------------------------------------------------

_PYPI_INSTALL = re.compile(r"pip install ['\"]?suimseg(?![\w\[-])")


def test_docs_do_not_send_readers_to_pypi_before_the_first_release() -> None:
    check = _load_script("check_release_version")
    released = [
        name
        for name in check.changelog_sections((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
        if name != "Unreleased"
    ]
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    pages += sorted((ROOT / "examples").rglob("*.py"))
    hits = [
        f"{page.relative_to(ROOT)}:{n}: {line.strip()}"
        for page in pages
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if _PYPI_INSTALL.search(line)
    ]
    if not released:  # nothing on PyPI yet: `pip install suimseg` finds nothing
        assert not hits, "install from git or a clone until the first release:\n" + "\n".join(hits)
    install = (ROOT / "docs" / "installation.md").read_text(encoding="utf-8")
    assert 'pip install "git+https://github.com/suimseg/suimseg"' in install
