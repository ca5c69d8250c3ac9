"""Sphinx extension: serve MathJax 3 from the built book instead of a CDN.

The book builds and is read on machines without network access, so the equations must
not depend on a CDN. MathJax's single-file SVG component (``tex-svg.js``, fonts
included) comes from the ``django-static-mathjax`` package in requirements.txt and is
copied into ``_static/mathjax/`` of the HTML output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

COMPONENT = "tex-svg.js"


def _source() -> Path:
    import mathjax  # installed by django-static-mathjax

    path = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / COMPONENT
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: install django-static-mathjax (see requirements.txt).")
    return path


def _configure(app, config) -> None:
    config.mathjax_path = f"mathjax/{COMPONENT}"


def _copy(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / "mathjax"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_source(), target / COMPONENT)


def setup(app):
    _source()  # fail early, with the fix in the message
    app.connect("config-inited", _configure)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
