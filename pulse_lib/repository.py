"""The book's repository URL, from one place: ``[tool.pulse-book] repository`` in
pyproject.toml.

Everything else that names the repository derives from it: the Colab badges and Colab
setup cells of the chapters, ``_config.yml`` (launch and repository buttons), the
project URLs in ``pyproject.toml`` and the examples in the docs. ``check`` lists what
disagrees; ``set URL`` rewrites all of it (for a fork, or when the book moves)::

    python -m pulse_lib.repository check
    python -m pulse_lib.repository set https://github.com/OWNER/NAME
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

import yaml

from pulse_lib.book import repo_root
from pulse_lib.errors import ConfigError

_URL = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)$")
#: Where the book names its own repository: each pattern captures OWNER/NAME.
_REFERENCES = (
    re.compile(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/"),
    re.compile(
        r"git clone[^\n]*?https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?[\s\"'\\]"
    ),
)
#: Files holding references besides the chapters (relative to the repository).
_TEXT_FILES = ("README.md", "CONTRIBUTING.md", "_config.yml", "pyproject.toml")


def configured(root: Path | None = None) -> str:
    """The repository URL of ``[tool.pulse-book]`` in pyproject.toml
    (``https://github.com/O/N``)."""
    root = root or repo_root()
    with open(root / "pyproject.toml", "rb") as handle:
        url = (
            tomllib.load(handle).get("tool", {}).get("pulse-book", {}).get("repository")
        )
    if not url:
        raise ConfigError(
            "pyproject.toml has no [tool.pulse-book] repository = "
            '"https://github.com/..."'
        )
    slug(url)
    return str(url)


def slug(url: str) -> str:
    """``OWNER/NAME`` of a GitHub repository URL; anything else is an error."""
    match = _URL.match(url.rstrip("/"))
    if not match:
        raise ConfigError(
            f"not a GitHub repository URL (https://github.com/OWNER/NAME): {url!r}"
        )
    return f"{match.group(1)}/{match.group(2)}"


def pages_url(url: str) -> str:
    """Where GitHub Pages publishes the book of ``url``."""
    owner, name = slug(url).split("/")
    return f"https://{owner.lower()}.github.io/{name}"


def _files(root: Path) -> list[Path]:
    files = [root / name for name in _TEXT_FILES if (root / name).is_file()]
    return (
        files
        + sorted((root / "chapters").glob("*.ipynb"))
        + sorted((root / "book").glob("*.md"))
    )


def mismatches(root: Path | None = None) -> list[str]:
    """Every place that names another repository than the configured one (empty: all
    agree)."""
    root = root or repo_root()
    url = configured(root)
    want = slug(url)
    problems = []
    for path in _files(root):
        text = path.read_text(encoding="utf-8")
        for pattern in _REFERENCES:
            for match in pattern.finditer(text):
                if match.group(1) != want:
                    problems.append(
                        f"{path.relative_to(root)}: {match.group(0).strip()[:90]}"
                    )
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    if config.get("repository", {}).get("url") != url:
        problems.append(
            "_config.yml: repository.url is "
            f"{config.get('repository', {}).get('url')!r}"
        )
    with open(root / "pyproject.toml", "rb") as handle:
        urls = tomllib.load(handle).get("project", {}).get("urls", {})
    if urls.get("Source") != url:
        problems.append(
            f"pyproject.toml: [project.urls] Source is {urls.get('Source')!r}"
        )
    if urls.get("Book") != pages_url(url):
        problems.append(f"pyproject.toml: [project.urls] Book is {urls.get('Book')!r}")
    return problems


def rewrite(new_url: str, root: Path | None = None) -> list[Path]:
    """Point every reference (and ``[tool.pulse-book]``) at ``new_url``; return the
    files changed."""
    from pulse_lib.io import atomic_write

    root = root or repo_root()
    old_url = configured(root)
    old, new = slug(old_url), slug(new_url)
    new_url = f"https://github.com/{new}"
    replacements = [
        (f"https://github.com/{old}", new_url),
        (
            f"colab.research.google.com/github/{old}/",
            f"colab.research.google.com/github/{new}/",
        ),
        (pages_url(old_url), pages_url(new_url)),
    ]
    changed = []
    for path in _files(root):
        text = path.read_text(encoding="utf-8")
        updated = text
        for before, after in replacements:
            updated = updated.replace(before, after)
        if updated != text:
            with atomic_write(path, "w") as handle:
                handle.write(updated)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pulse_lib.repository",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "check", help="list every reference that disagrees with pyproject.toml"
    )
    setter = sub.add_parser("set", help="point every reference at another repository")
    setter.add_argument("url", help="https://github.com/OWNER/NAME")
    args = parser.parse_args(argv)
    try:
        if args.command == "set":
            for path in rewrite(args.url):
                print(f"rewrote {path}")
        problems = mismatches()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    print(
        f"{configured()}: "
        + (
            f"{len(problems)} reference(s) disagree"
            if problems
            else "every reference agrees"
        )
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
