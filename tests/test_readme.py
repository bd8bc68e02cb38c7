"""The README's Python blocks, verbatim, one notebook cell per block, in a real Jupyter kernel.

This is what a newcomer does: paste the tour into a notebook cell by cell. Every ```` ```python ````
block of README.md becomes a code cell (except a block right after a
``<!-- tests/test_readme.py skips the next block: REASON -->`` comment: a GPU, a server started by
hand). nbclient executes the notebook in an ipykernel running this interpreter. Then:

* no cell fails;
* where a ```` ```text ```` block follows a Python block, the cell's result (``text/plain`` of its
  ``execute_result``) is exactly that text: the README shows the answers the model gives;
* every line of a cell of ``%sglang`` magics shows its result, and ``%sglang start`` followed by
  ``%sglang status`` shows the status table once;
* a chart shows as an image without ``%matplotlib inline``.

The answers are greedy decoding of the bundled SmolLM2-135M-Instruct through its chat template
(``tokenizer.apply_chat_template``, as SGLang's ``RuntimeEndpoint.get_chat_template`` /
``sglang.lang.chat_template`` build chat prompts); ``select`` picks by normalized logprob as
``sglang.lang.interpreter.StreamExecutor._execute_select`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP = re.compile(r"<!--\s*tests/test_readme\.py skips the next block:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")

pytestmark = pytest.mark.timeout(900)


@dataclass
class Block:
    info: str
    source: str
    line: int  # where the block starts in README.md (1-based), for messages
    skip: str = ""  # why the test does not run it
    expected: str | None = None  # the text block that follows it, if any


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each ```text block attached to the block before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i, skip, last_end = 0, "", -2
    while i < len(lines):
        fence = FENCE.match(lines[i])
        marker = SKIP.search(lines[i])
        if marker:
            skip = marker.group(1)
        if fence is None:
            i += 1
            continue
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        block = Block(fence.group(1), "\n".join(body), start + 1, skip)
        skip = ""
        only_blank_between = all(not ln.strip() for ln in lines[last_end + 1 : start])
        if block.info == "text" and blocks and blocks[-1].info == "python" and only_blank_between:
            blocks[-1].expected = block.source
        else:
            blocks.append(block)
        last_end = i
        i += 1
    return blocks


def python_blocks() -> list[Block]:
    return [b for b in readme_blocks(README.read_text()) if b.info == "python"]


def test_readme_parser_finds_the_tour() -> None:
    """The parser sees what a reader sees (a test of the test: a parser finding nothing passes nothing)."""
    blocks = python_blocks()
    run = [b for b in blocks if not b.skip]
    assert run[0].source.startswith("%load_ext sgnb")
    assert sum(b.expected is not None for b in run) >= 4
    assert all(b.skip for b in blocks if "--runtime engine" in b.source or "%sglang connect" in b.source)
    text = (
        "```python\nx = 1\n```\n\n```text\n1\n```\n<!-- tests/test_readme.py skips the next block: why -->\n"
    )
    text += "```python\ny\n```\n"
    parsed = readme_blocks(text)
    assert [(b.source, b.expected, b.skip) for b in parsed] == [("x = 1", "1", ""), ("y", None, "why")]


def lost_values(source: str) -> list[str]:
    """The lines of a cell whose value a reader expects to see but never does: a bare expression
    that is not a call (``c.url, c.workers``) anywhere but last; IPython shows the last one only."""
    import ast

    from IPython.core.inputtransformer2 import TransformerManager

    body = ast.parse(TransformerManager().transform_cell(source)).body
    return [
        ast.unparse(node)
        for node in body[:-1]
        if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Call | ast.Constant)
    ]


def test_every_value_a_block_names_is_shown() -> None:
    """Pasted as one cell, a block shows only its last expression's value: a value named earlier
    (the cluster block's ``c.url, c.workers`` before ``c.stop()``) showed nothing at all."""
    assert lost_values("a = 1\na, a\nprint(a)") == ["(a, a)"]  # the check itself finds one
    lost = {b.line: lost_values(b.source) for b in python_blocks()}
    assert not {line: values for line, values in lost.items() if values}, lost


def _text(output: dict[str, Any]) -> str:
    if output.get("output_type") == "stream":
        return str(output.get("text", ""))
    data = output.get("data", {})
    plain = data.get("text/plain", "")
    return "".join(plain) if isinstance(plain, list) else str(plain)


@pytest.fixture(scope="module")
def executed(kernel_name: str, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Block, Any]]:
    from nbclient import NotebookClient

    blocks = [b for b in python_blocks() if not b.skip]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(b.source) for b in blocks]
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "sgnb", "language": "python"}
    work = tmp_path_factory.mktemp("readme")
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=600,
        allow_errors=True,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()
    nbformat.write(nb, work / "readme.ipynb")  # kept for a failing run's post-mortem
    return list(zip(blocks, nb.cells, strict=True))


def test_no_cell_fails(executed: list[tuple[Block, Any]]) -> None:
    for block, cell in executed:
        errors = [o for o in cell.outputs if o["output_type"] == "error"]
        stderr = "".join(o["text"] for o in cell.outputs if o.get("name") == "stderr")
        assert not errors, f"README.md line {block.line}: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert "Traceback" not in stderr and "Error" not in stderr, f"README.md line {block.line}: {stderr}"


def test_answers_are_the_ones_the_readme_shows(executed: list[tuple[Block, Any]]) -> None:
    checked = 0
    for block, cell in executed:
        if block.expected is None:
            continue
        results = [_text(o) for o in cell.outputs if o["output_type"] == "execute_result"]
        assert results == [block.expected.strip()], f"README.md line {block.line}"
        checked += 1
    assert checked >= 4


def test_every_magic_of_a_cell_shows(executed: list[tuple[Block, Any]]) -> None:
    by_start = {b.source.splitlines()[0].split("#")[0].strip(): c for b, c in executed}
    first = by_start["%load_ext sgnb"]
    texts = [_text(o) for o in first.outputs]
    (ready,) = [t for t in texts if "SGLang runtime ready" in t]  # what %sglang start says, once
    assert "imports" in ready and "model load" in ready  # where the start-up seconds went
    assert not [o for o in first.outputs if "sgnb-progress" in str(o.get("data", {}))]  # its bar is gone
    tables = [o for o in first.outputs if "SGLang runtime</b>" in str(o.get("data", {}).get("text/html", ""))]
    assert len(tables) == 1  # %sglang status's table, not a second copy from start
    shown = "\n".join(_text(o) for o in by_start["%sglang tree"].outputs)
    for what in (
        "RadixTreeWidget:",
        "CachePanel:",
        "radix cache flushed",
        "quick benchmark",
        "stopped the local",
    ):
        assert what in shown, what
    bars = [o for o in by_start["%sglang tree"].outputs if "sgnb-progress" in str(o.get("data", {}))]
    assert not bars  # the bench's progress bar is gone once its table shows


def test_chart_shows_as_an_image(executed: list[tuple[Block, Any]]) -> None:
    """``stats.plot()`` in a fresh kernel (no ``%matplotlib inline``): a PNG, not ``<Figure size ...>``."""
    cell = next(c for b, c in executed if b.source.startswith("stats = %sglang stats"))
    (result,) = [o for o in cell.outputs if o["output_type"] == "execute_result"]
    assert "image/png" in result["data"]
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_notebook_node(nbformat.v4.new_notebook(cells=[cell]))
    assert re.search(r'<img [^>]*src="data:image/png;base64,', page)  # and in an nbconvert HTML export
