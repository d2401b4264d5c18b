"""book.repo_root(): how a chapter finds the clone, from a checkout, an editable install, or a
non-editable `pip install <clone>` (Colab) with or without PULSE_BOOK_ROOT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pulse_lib import book
from pulse_lib.errors import ConfigError


def _fake_checkout(path: Path) -> Path:
    (path / "pulse_lib").mkdir(parents=True)
    (path / "_toc.yml").write_text("format: jb-book\n")
    return path


class _Dist:
    def __init__(self, text: str | None) -> None:
        self.text = text

    def read_text(self, name: str) -> str | None:
        assert name == "direct_url.json"
        return self.text


def test_the_variable_wins_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_BOOK_ROOT", str(tmp_path))
    assert book.repo_root() == tmp_path.resolve()
    monkeypatch.setenv("PULSE_BOOK_ROOT", str(tmp_path / "no-such-clone"))
    with pytest.raises(ConfigError, match="no-such-clone.*not a directory"):
        book.repo_root()


def test_a_parent_of_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("PULSE_BOOK_ROOT", raising=False)
    clone = _fake_checkout(tmp_path / "clone")
    (clone / "chapters").mkdir()
    monkeypatch.chdir(clone / "chapters")
    assert book.repo_root() == clone.resolve()


def test_a_non_editable_install_finds_the_clone_it_was_installed_from(tmp_path, monkeypatch):
    monkeypatch.delenv("PULSE_BOOK_ROOT", raising=False)
    clone = _fake_checkout(tmp_path / "my clone")  # a space: the URL is percent-encoded
    site = tmp_path / "site-packages" / "pulse_lib"
    site.mkdir(parents=True)
    monkeypatch.setattr(book, "__file__", str(site / "book.py"))  # installed away from the clone
    monkeypatch.chdir(tmp_path)
    record = json.dumps({"url": clone.as_uri(), "dir_info": {}})
    monkeypatch.setattr(book.importlib.metadata, "distributions", lambda name: [_Dist(None), _Dist(record)])
    assert book.repo_root() == clone
    # installed from an index or a wheel (no local directory): a clear error says what to set
    monkeypatch.setattr(book.importlib.metadata, "distributions", lambda name: [_Dist(None)])
    with pytest.raises(ConfigError, match="PULSE_BOOK_ROOT"):
        book.repo_root()
    record = json.dumps({"url": "https://example.org/pulse_lib-0.1.0-py3-none-any.whl", "archive_info": {}})
    monkeypatch.setattr(book.importlib.metadata, "distributions", lambda name: [_Dist(None), _Dist(record)])
    with pytest.raises(ConfigError, match="PULSE_BOOK_ROOT"):
        book.repo_root()


def test_the_source_checkout_of_the_module(tmp_path, monkeypatch, repo_root):
    monkeypatch.delenv("PULSE_BOOK_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # outside any checkout: the module's own checkout is used,
    source = Path(book.__file__).resolve().parent.parent  # or, installed, the one it came from
    expected = source if (source / "_toc.yml").is_file() else book._installed_from()
    assert expected is not None and book.repo_root() == expected
