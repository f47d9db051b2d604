"""Sphinx configuration: Markdown pages (MyST) and an API reference from the docstrings.

Build: ``sphinx-build -W --keep-going docs docs/_build/html`` (warnings are errors).
"""

import maxnorm_jax

project = "maxnorm_jax"
author = "maxnorm_jax developers"
copyright = "maxnorm_jax developers"  # noqa: A001 -- Sphinx's name
release = maxnorm_jax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 4

# The reference documents the public names (maxnorm_jax.max_norm, ...), never the private
# modules that define them, so pages survive the modules being moved.
autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # NamedTuple fields: listed once, in the class entry
add_module_names = True

html_theme = "furo"
html_title = f"maxnorm_jax {release}"
