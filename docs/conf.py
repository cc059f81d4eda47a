"""Sphinx configuration: the API reference of convexrobust, built by ``make docs``.

``make docs`` runs ``sphinx-build -W -E`` (every warning is an error, every page is re-read),
so markup errors, duplicate objects and import failures in the docstrings fail the build.
Two checks of our own warn (and so fail) when the pages fall behind the code: a name of
``convexrobust.__all__`` missing from api.rst, or a script of ``examples/`` missing from
examples.rst.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The package is installed editable by `make docs`; the path is for a plain `sphinx-build`.
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import convexrobust  # noqa: E402

project = "convexrobust"
author = "the convexrobust authors"
copyright = "convexrobust authors"  # noqa: A001
release = version = convexrobust.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",   # the docstrings mix Google (Args:) and NumPy (Parameters) sections
    "sphinx.ext.mathjax",    # :math: roles and .. math:: blocks
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
root_doc = "index"
default_role = "code"        # `x` in a docstring is code, not a cross-reference
# Off: without intersphinx (the build reaches no network) ~400 references to torch, numpy and
# undocumented internals (tuning constants, private helpers) would fail; short names of
# documented objects are resolved by _resolve_short_names below.
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
# nn.Module.forward's docstring is not ours: an override without a docstring stays undocumented.
autodoc_inherit_docstrings = False
autodoc_default_options = {"show-inheritance": True}

napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True
# The torch solvers' docstrings end with this section (solvers/first_order.py
# COMMON_OPTIONS_DOC), laid out like Parameters.
napoleon_custom_sections = [("Common options (every torch solver)", "params_style")]

html_theme = "alabaster"
html_title = f"convexrobust {release}"
html_static_path: list[str] = []
# README.md is copied next to index.html so that the index can link to its tour.
html_extra_path = [str(ROOT / "README.md")]
html_theme_options = {"description": "Convex adversarial training, with certificates",
                      "fixed_sidebar": True}


def _check_pages(app, env) -> None:
    """Warn when api.rst misses a public name or examples.rst misses an example script."""
    from sphinx.util import logging

    log = logging.getLogger("convexrobust.docs")
    objects = env.get_domain("py").objects
    for name in convexrobust.__all__:
        if f"convexrobust.{name}" not in objects:
            log.warning("convexrobust.%s (in convexrobust.__all__) is not documented: add it "
                        "to docs/api.rst", name, location="api")
    examples = (DOCS / "examples.rst").read_text(encoding="utf-8")
    for script in sorted((ROOT / "examples").glob("*.py")):
        if f"../examples/{script.name}" not in examples:
            log.warning("examples/%s is not shown: add it to docs/examples.rst", script.name,
                        location="examples")


def _skip_foreign(app, what, name, obj, skip, options):
    """Skip members that scikit-learn generates on the estimators (``set_fit_request`` and
    the like): their docstrings reference sklearn's own glossary, which is not here."""
    if getattr(obj, "__module__", None) and obj.__module__.startswith("sklearn."):
        return True
    return None


def _napoleon_prose_attributes(app) -> None:
    """Run napoleon on every docstring but those of attributes, data and properties.

    Napoleon reads the first line of those as ``type: description``; here they are prose
    ("Robust constraints per (sample, output): ...") and would render as a bogus type. Its own
    listener is replaced by one that applies its public docstring classes (NumPy, then Google,
    as napoleon does with both styles on) to the other objects."""
    from sphinx.ext.napoleon.docstring import GoogleDocstring, NumpyDocstring

    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if getattr(listener.handler, "__module__", "").startswith("sphinx.ext.napoleon"):
            app.disconnect(listener.id)

    def process(app, what, name, obj, options, lines):
        if what in ("attribute", "data", "property"):
            return
        result = lines
        for style in (NumpyDocstring, GoogleDocstring):
            result = style(result, app.config, app, what, name, obj, options).lines()
        lines[:] = result

    app.connect("autodoc-process-docstring", process)


def _resolve_short_names(app, env, node, contnode):
    """Resolve a Python reference the domain could not, such as ``:class:`SolverFailedError```
    in a module that imports it, to the one documented object of that name: the top-level
    ``convexrobust.<name>`` first, else a unique ``<anything>.<name>``."""
    if node.get("refdomain") != "py":
        return None
    from sphinx.util.nodes import make_refnode

    target = node["reftarget"].lstrip(".~")
    objects = env.get_domain("py").objects
    entry = objects.get(f"convexrobust.{target}")
    if entry is None:
        matches = [name for name in objects if name.endswith(f".{target}")]
        if len(matches) != 1:
            return None
        entry = objects[matches[0]]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode,
                        target)


def _public_bases(app, name, obj, options, bases) -> None:
    """Show public bases only: a private base (``_TwoLayer``) is replaced by its own bases."""
    public: list[type] = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        if getattr(base, "__name__", "").startswith("_"):
            pending[:0] = list(base.__bases__)
        elif base not in public and base is not object:
            public.append(base)
    bases[:] = public or [object]


def setup(app):
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("missing-reference", _resolve_short_names)
    _napoleon_prose_attributes(app)
    app.connect("autodoc-skip-member", _skip_foreign)
    app.connect("env-check-consistency", _check_pages)
