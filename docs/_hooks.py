"""MkDocs hook: the docstrings' Sphinx roles (``:func:`fit```) render as plain code in the API pages."""

import re

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc|const):(?=<code>)")


def on_page_content(html, **kwargs):
    return _ROLE.sub("", html)
