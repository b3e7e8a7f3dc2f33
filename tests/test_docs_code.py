"""Every ```python block in docs/*.md and README.md runs.

The blocks of one page run in order in one namespace (like a notebook), so a later block
can use what an earlier one built. They run in a temporary folder that holds a small
synthetic dataset in the official layout at ``./SUIM`` (:func:`make_synthetic_suim`) and,
for pages that mention it, a checkpoint of a tiny untrained UNetResAttnV3 at
``./runs/v3/best.pt`` (where ``suimseg train`` writes one), so code written for the real
dataset and a trained model runs unchanged.

Two HTML comments, on the lines directly above a block, change how it runs:

- ``<!-- no-run: reason -->`` skips the block (for code that needs a GPU, the real
  dataset or the network). Used sparingly: the number of skipped blocks is capped below.
- A block that only includes a script of ``examples/`` (``--8<-- "examples/x.py"``, the
  snippet syntax of pymdownx.snippets) is not run here: ``tests/test_examples.py`` runs
  every example. The included file must exist.
- ``<!-- test-replace: OLD => NEW -->`` runs the block with every ``OLD`` replaced by
  ``NEW``, to shrink full-scale settings (``image_size=384 => image_size=64``) while still
  checking every name and argument the reader sees. ``OLD`` must occur in the block.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from suimseg import DiceFocalLoss, Trainer, UNetResAttnV3, make_synthetic_suim

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
MAX_SKIPPED = 4  # keep opt-outs rare: raise this only with a good reason
CHECKPOINT = "runs/v3/best.pt"
#: Pages whose code needs an optional extra (the module to find): skipped without it.
PAGE_NEEDS = {"lightning.md": "lightning"}

_FENCE_OPEN = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
_INCLUDE = re.compile(r'^--8<-- "(?P<path>examples/[\w.-]+\.py)"$')
_DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<name>no-run|test-replace)\b:?\s*(?P<arg>.*?)\s*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None = None
    replacements: list[tuple[str, str]] = field(default_factory=list)

    @property
    def included(self) -> Path | None:
        """The example script this block only includes, if that is all it does."""
        m = _INCLUDE.match(self.code.strip())
        return ROOT / m["path"] if m else None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _directives(lines: list[str], fence_index: int) -> Iterator[re.Match[str]]:
    i = fence_index - 1
    while i >= 0 and (m := _DIRECTIVE.match(lines[i])):
        yield m
        i -= 1


def python_blocks(page: Path) -> list[Block]:
    """The ```python blocks of a Markdown page, with their directives."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, lang = m["indent"], m["lang"]
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{page}:{i + 1}: unclosed code fence")
        if lang in ("python", "py"):
            code = textwrap.dedent("\n".join(line[len(indent) :] for line in lines[i + 1 : end]))
            block = Block(page, i + 1, code)
            for d in _directives(lines, i):
                if d["name"] == "no-run":
                    block.skip = d["arg"] or "no reason given"
                else:
                    old, sep, new = d["arg"].partition(" => ")
                    if not sep or not old:
                        raise ValueError(f"{page}:{i}: expected 'test-replace: OLD => NEW'")
                    block.replacements.append((old, new))
            blocks.append(block)
        i = end + 1
    return blocks


ALL_BLOCKS = {page.name: python_blocks(page) for page in PAGES if page.is_file()}


def _tiny_checkpoint(path: Path) -> None:
    model = UNetResAttnV3(encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16)
    optimizer = torch.optim.AdamW(model.parameters())
    Trainer(model, DiceFocalLoss(), optimizer, device="cpu").save_checkpoint(path)


@pytest.fixture(scope="module")
def synthetic_suim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset every page starts from, written once (each page gets its own copy)."""
    return make_synthetic_suim(
        tmp_path_factory.mktemp("docs") / "SUIM", n_train_val=14, n_test=4, size=(96, 72)
    )


@pytest.fixture
def docs_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_suim: Path
) -> Iterator[Path]:
    shutil.copytree(synthetic_suim, tmp_path / "SUIM")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared CPU
    torch.manual_seed(0)
    try:
        yield tmp_path
    finally:
        torch.set_num_threads(threads)


def _run_page(page: str, workdir: Path) -> None:
    blocks = ALL_BLOCKS[page]
    if any(CHECKPOINT in b.code for b in blocks):
        _tiny_checkpoint(workdir / CHECKPOINT)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in blocks:
        if block.skip is not None:
            continue
        if block.included is not None:
            assert block.included.is_file(), f"{block.where}: {block.included} does not exist"
            continue
        code = block.code
        for old, new in block.replacements:
            assert old in code, f"{block.where}: test-replace target {old!r} not in the block"
            code = code.replace(old, new)
        compiled = compile(code, block.where, "exec")
        try:
            exec(compiled, namespace)
        except Exception as exc:
            raise AssertionError(
                f"the code block at {block.where} failed: {type(exc).__name__}: {exc}"
            ) from exc


@pytest.mark.parametrize("page", sorted(n for n, b in ALL_BLOCKS.items() if b))
def test_page_code_runs(page: str, docs_workdir: Path) -> None:
    needs = PAGE_NEEDS.get(page)
    if needs and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{page} needs {needs!r} (pip install 'suimseg[{needs}]')")
    _run_page(page, docs_workdir)


@pytest.mark.slow
def test_quickstart_runs_twice_in_one_folder(docs_workdir: Path) -> None:
    """A reader who runs the quickstart again in the same folder gets no error."""
    _run_page("quickstart.md", docs_workdir)
    _run_page("quickstart.md", docs_workdir)


def test_skipped_blocks_stay_few() -> None:
    skipped = [b.where for blocks in ALL_BLOCKS.values() for b in blocks if b.skip is not None]
    ran = sum(
        b.skip is None and b.included is None for blocks in ALL_BLOCKS.values() for b in blocks
    )
    assert len(skipped) <= MAX_SKIPPED, f"too many <!-- no-run --> blocks: {skipped}"
    assert ran >= 20, f"only {ran} runnable python blocks found in the docs"


def test_expected_pages_have_code() -> None:
    for name in ("README.md", "index.md", "quickstart.md", "installation.md", "training.md"):
        assert ALL_BLOCKS.get(name), f"{name} has no python code block (or is missing)"


def test_parser_reads_directives(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- no-run: needs a GPU -->\n```python\nimport nope\n```\n\n"
        "<!-- test-replace: 384 => 64 -->\n```python\nx = 384\n```\n\n"
        "```bash\nls\n```\n\n- item\n\n    ```python\n    y = 1\n    ```\n",
        encoding="utf-8",
    )
    blocks = python_blocks(page)
    assert [b.line for b in blocks] == [4, 9, 19]
    assert blocks[0].skip == "needs a GPU"
    assert blocks[1].replacements == [("384", "64")]
    assert blocks[2].code.strip() == "y = 1"


def test_parser_recognises_included_examples(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '??? example "x"\n\n    ```python\n    --8<-- "examples/trainer.py"\n    ```\n\n'
        '```python\n--8<-- "examples/trainer.py"\nprint(1)\n```\n',
        encoding="utf-8",
    )
    first, second = python_blocks(page)
    assert first.included == ROOT / "examples" / "trainer.py"
    assert second.included is None  # more than an include: it runs


def test_parser_rejects_malformed_replace(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- test-replace: 384 -->\n```python\nx = 384\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected 'test-replace: OLD => NEW'"):
        python_blocks(page)


def test_parser_rejects_unclosed_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unclosed code fence"):
        python_blocks(page)
