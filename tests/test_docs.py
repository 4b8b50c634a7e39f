"""Docs that cannot rot: every command the README and docs/ name exists and answers --help, every make
target they name exists, and every recipe path they name is a file."""
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = {p.name: p.read_text(encoding="utf-8") for p in DOCS}


def _commands() -> list[tuple[str, ...]]:
    """(module,) or (module, subcommand) for every ``python -m MODULE [subcommand]`` in the docs."""
    found = set()
    for text in TEXT.values():
        for module, sub in re.findall(r"python -m ([A-Za-z_]\w*(?:\.\w+)*)(?:\s+([a-z][a-z_]*)\b(?![/.\w]))?", text):
            found |= {(module,), (module, sub)} if sub else {(module,)}  # a command with subcommands answers too
    return sorted(found)


def test_the_docs_name_commands_and_targets():
    commands = _commands()
    assert ("pipelines.study",) in commands and ("attribution", "ig") in commands and len(commands) >= 10


def test_every_named_command_answers_help():
    def run(command):
        proc = subprocess.run([sys.executable, "-m", command[0], *command[1:], "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        return command, proc.returncode, (proc.stdout + proc.stderr)[-400:]

    with ThreadPoolExecutor(2) as pool:
        failed = [(c, rc, tail) for c, rc, tail in pool.map(run, _commands()) if rc != 0]
    assert not failed, failed


def test_every_named_make_target_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    # in code: a line of a code block that starts with it, or an inline span that does
    named = {t for text in TEXT.values() for t in re.findall(r"(?:^|`)make ([a-z][\w-]*)", text, flags=re.M)}
    assert named and named <= targets, named - targets


@pytest.mark.parametrize("doc", sorted(TEXT))
def test_every_named_recipe_and_doc_exists(doc):
    text = TEXT[doc]
    base = ROOT if doc == "README.md" else ROOT / "docs"
    recipes = set(re.findall(r"recipes/[\w./{},-]+\.(?:yaml|jinja)", text))
    for name in recipes:
        braces = re.fullmatch(r"(.*)\{(.*)\}(.*)", name)  # recipes/<model>/{selective,full_cot}.yaml: two files
        files = [braces[1] + alt + braces[3] for alt in braces[2].split(",")] if braces else [name]
        for f in files:
            assert (ROOT / f).is_file(), f"{doc} names {f}"
    for link in re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]+)?\)", text):
        assert (base / link).is_file(), f"{doc} links {link}"
