"""Every Python block of README.md, data/README.md and the documentation's Markdown pages runs as pasted."""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "data/README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")
                                                if not {"_build", "auto_examples"} & set(p.parts))
BLOCKS = [(doc, i, code) for doc in DOCS
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S))]


@pytest.mark.parametrize("doc,i,code", BLOCKS, ids=[f"{d}-{i}" for d, i, _ in BLOCKS])
def test_python_block_runs(doc, i, code, tmp_path, monkeypatch):
    data = os.environ.get("SET_CY_DATA", "")
    if doc.startswith("data/") and not os.path.isdir(data):
        pytest.skip(f"data/README.md reads the real data sets: SET_CY_DATA={data!r} is not a folder")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{doc}[{i}]", "exec"), {"__name__": "__readme__"})


def test_readme_test_command_is_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme
