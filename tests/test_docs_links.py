"""Every file the README and docs/ point at is in the repository, and none is hidden by .gitignore.

An unanchored ``results/`` in .gitignore once matched ``docs/results/`` and kept every committed report, plot and
run file of docs/results.md out of git without anyone noticing: the links worked in the working tree that wrote
them and were dead in every clone. This test reads the links as a reader follows them.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')          # [text](target) and ![alt](target)
DOCS_PATH = re.compile(r'`(docs/[\w./-]+\.\w+)`')          # `docs/...` named in prose as a committed file


def referenced_files(doc: Path) -> list:
    """(shown target, path) for every local file ``doc`` links to or names under docs/."""
    text = doc.read_text()
    refs = []
    for target in LINK.findall(text):
        if re.match(r'[a-z]+:', target) or target.startswith('#'):
            continue                                       # a URL or an anchor in the same page
        refs.append((target, (doc.parent / target.split('#')[0]).resolve()))
    refs += [(name, (REPO / name).resolve()) for name in DOCS_PATH.findall(text)]
    return refs


def test_the_pattern_finds_links(tmp_path):
    doc = tmp_path / 'x.md'
    doc.write_text('see [a](sub/a.md), ![p](img.png), [web](https://x.y/z), [top](#anchor) and `docs/r/t.json`\n')
    shown = [target for target, _ in referenced_files(doc)]
    assert shown == ['sub/a.md', 'img.png', 'docs/r/t.json']


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_linked_files_exist(doc: Path):
    missing = [target for target, path in referenced_files(doc) if not path.exists()]
    assert not missing, f'{doc.name} points at files that are not in the repository: {missing}'


@pytest.mark.skipif(shutil.which('git') is None or not (REPO / '.git').exists(), reason='not a git checkout')
@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_linked_files_are_not_gitignored(doc: Path):
    paths = [str(path.relative_to(REPO)) for _, path in referenced_files(doc) if path.is_relative_to(REPO)]
    if not paths:
        return
    ignored = subprocess.run(['git', 'check-ignore', '--no-index', *paths], cwd=REPO, capture_output=True,
                             text=True).stdout.split()
    assert not ignored, f'{doc.name} points at files that .gitignore keeps out of git: {ignored}'
