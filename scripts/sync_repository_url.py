"""Write the repository URL of ``_config.yml`` into every place that needs it: the Colab
install cell of each notebook and assignment, and the README's Colab badge. Change the
URL in ``_config.yml`` only, then run::

    python scripts/sync_repository_url.py

``tests/test_book.py`` fails while any of those places differs from ``_config.yml``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
INSTALL = re.compile(r'%pip install -q "consensus-tutorial @ git\+[^"]*"')
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]*?/blob/")


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "assignments").rglob("*.ipynb"))


def main() -> int:
    url = repository_url()
    owner_repo = url.removeprefix("https://github.com/")
    changed = []
    for path in notebooks():
        text = path.read_text()
        nb = json.loads(text)
        for cell in nb["cells"]:
            src = "".join(cell["source"])
            new = INSTALL.sub(f'%pip install -q "consensus-tutorial @ git+{url}"', src)
            if new != src:
                cell["source"] = new.splitlines(keepends=True)
        out = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if out != text:
            path.write_text(out)
            changed.append(path.relative_to(ROOT))
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = BADGE.sub(f"https://colab.research.google.com/github/{owner_repo}/blob/", text)
    if new != text:
        readme.write_text(new)
        changed.append(readme.relative_to(ROOT))
    print("updated: " + (", ".join(map(str, changed)) or "nothing (all agree)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
