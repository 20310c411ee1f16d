"""Sphinx configuration: ``make -C docs html`` builds the site, warnings as errors."""

import skflow

project = "skflow"
author = "The skflow developers"
copyright = "2026, the skflow developers"
release = version = skflow.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples/GALLERY_HEADER.rst"]
html_theme = "pydata_sphinx_theme"
html_static_path = ["_static"]
html_title = f"skflow {release}"
html_theme_options = {"navigation_with_keys": False}

# The API pages list methods themselves; numpydoc's member tables would
# duplicate them.
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
}
