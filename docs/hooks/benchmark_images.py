"""MkDocs hook: the plots under benchmarks/results/ show in the site without a copy under docs/.

A page links a plot by its path from the page's own folder, as GitHub resolves it
(`../benchmarks/results/lr_find/lite2_head.png` from docs/compare.md). MkDocs only
knows files inside docs_dir, so this hook adds each plot a page links to the
site's files (at `benchmarks/results/...`) and points the link there. A link to a
plot that does not exist is left as written, and `mkdocs build --strict` fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

RESULTS = "benchmarks/results/"
IMAGE_LINK = re.compile(r"\]\(([^)\s]+\.png)\)")


def _results_path(page_uri: str, link: str) -> str | None:
    """`benchmarks/results/...` when `link`, read from the page, leads there from the docs folder's parent."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), link))
    return joined[len("../"):] if joined.startswith("../" + RESULTS) else None


def on_files(files, config):
    root = Path(config["config_file_path"]).resolve().parent
    for doc in list(files.documentation_pages()):
        text = Path(doc.abs_src_path).read_text(encoding="utf-8")
        for link in IMAGE_LINK.findall(text):
            target = _results_path(doc.src_uri, link)
            if target and (root / target).is_file() and files.get_file_from_path(target) is None:
                files.append(File(target, src_dir=str(root), dest_dir=config["site_dir"],
                                  use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    def relink(match):
        target = _results_path(page.file.src_uri, match.group(1))
        if target is None or files.get_file_from_path(target) is None:
            return match.group(0)
        return f"]({posixpath.relpath(target, posixpath.dirname(page.file.src_uri) or '.')})"

    return IMAGE_LINK.sub(relink, markdown)
