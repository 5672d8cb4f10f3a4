"""README.md as a new user meets it: every ```python block runs as written, on its own (a reader
copies one block), and the shell commands name only what exists: files and folders of the
repository, gdfast-bench's options, pyproject.toml's extras. Also: importing gdfast from a
checkout that hides the installed package says what happened and what to do.

Not checked, because it would install, build or take minutes: that the `pip install`s succeed
and bring what the commands after them need, and that the shell commands themselves run
(`python -m build`, auditwheel, cibuildwheel, examples/native's build and its `python -c`, a
gdfast-bench run: tests/test_bench_cli.py runs the bench's command line). Unlabelled blocks that
are listings rather than commands (the first word is no command) are reported as skipped.
Blocks in other languages (```cython, ```text: messages, listings) are not run.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Set

import pytest

import gdfast

from conftest import run_python

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The wheel stage of .ci/run (and cibuildwheel) runs a copy of tests/ and pyproject.toml only.
NO_README = "no README.md beside tests/ (the tests run from an installed wheel's copy)"

SHELL = ("", "bash", "sh")
FENCE = re.compile(r"^( *)```([\w+-]*)[^\n]*\n(.*?)^\1```[ \t]*$", re.S | re.M)
HEADING = re.compile(r"^#{2,3} +(.*)$", re.M)
NEEDS_TORCH = re.compile(r"^\s*(?:import|from)\s+torch\b|\bgdfast\.torch\b", re.M)


@dataclasses.dataclass
class Block:
    line: int  # of the opening fence
    lang: str
    code: str
    section: str

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.section})"


def sections(text: str) -> List[tuple]:
    """(heading, start offset) of each ## / ### section, with ("top", 0) first."""
    return [("top", 0)] + [(m.group(1).strip(), m.start()) for m in HEADING.finditer(text)]


def section_at(text: str, offset: int) -> str:
    return [name for name, start in sections(text) if start <= offset][-1]


def blocks(text: str) -> List[Block]:
    found = []
    for m in FENCE.finditer(text):
        indent = len(m.group(1))  # a block inside a list item is indented with it
        code = "".join(line[indent:] for line in m.group(3).splitlines(keepends=True))
        found.append(Block(text.count("\n", 0, m.start()) + 1, m.group(2), code,
                           section_at(text, m.start())))
    return found


TEXT = README.read_text(encoding="utf-8") if README.is_file() else ""
BLOCKS = blocks(TEXT)
NONE = [pytest.param(None, marks=pytest.mark.skip(reason=NO_README))]


def params(selected: List[Block]) -> list:
    return [pytest.param(b, id=f"line{b.line}") for b in selected] if TEXT else NONE


def test_fences_parse() -> None:
    """Every ``` of README.md is paired by the block pattern above (an unpaired or mis-indented
    fence would silently hide the rest of the file from the tests below)."""
    if not TEXT:
        pytest.skip(NO_README)
    fences = len(re.findall(r"^ *```", TEXT, re.M))
    assert fences == 2 * len(BLOCKS), f"{fences} fences, {len(BLOCKS)} blocks found"
    assert {b.lang for b in BLOCKS} <= {"python", "cython", "text", *SHELL}, \
        "a fence language this test does not know: run it (python), check it (shell), or add it"


# ---------------------------------------------------------------------------------------------
# ```python blocks: each in a fresh interpreter, from a temporary folder (the installed gdfast),
# warnings as errors (a reader would see them).


@pytest.mark.parametrize("block", params([b for b in BLOCKS if b.lang == "python"]))
def test_python_block_runs(block: Optional[Block]) -> None:
    assert block is not None
    if NEEDS_TORCH.search(block.code) and importlib.util.find_spec("torch") is None:
        pytest.skip(f"{block} needs torch, which is not installed")
    result = run_python(block.code, PYTHONWARNINGS="error")
    assert result.returncode == 0, f"{block} failed:\n{block.code}\n{result.stderr[-3000:]}"


# ---------------------------------------------------------------------------------------------
# Shell commands, in blocks and in `inline code`: what exists, without running them.


def bench_options() -> Set[str]:
    """gdfast-bench's option names, from its usage line (what `gdfast-bench --help` shows)."""
    from gdfast.bench.cli import build_parser

    return set(re.findall(r"--[\w-]+", build_parser().format_usage()))


def extras() -> Dict[str, Set[str]]:
    """pyproject.toml's extras: name -> the distributions it installs (lower case; an extra
    that names gdfast's own extras, `gdfast[plot]`, includes theirs)."""
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    with open(ROOT / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["optional-dependencies"]

    def names(extra: str, seen: Set[str]) -> Set[str]:
        found = set()
        for requirement in declared[extra]:
            m = re.match(r"\s*([\w.-]+)\s*(?:\[([\w,\s-]+)\])?", requirement)
            assert m, requirement
            found.add(m.group(1).lower())
            if m.group(1).lower() == "gdfast" and m.group(2):
                for sub in m.group(2).split(","):
                    if sub.strip() in declared and sub.strip() not in seen:
                        found |= names(sub.strip(), seen | {sub.strip()})
        return found

    return {extra: names(extra, {extra}) for extra in declared}


# Commands whose arguments are build outputs, places outside the repository or package names:
# only the generic path check below applies to them.
UNCHECKED = {"mkdir", "auditwheel", "cibuildwheel"}
COMMANDS = {"pip", "python", "python3", "pytest", "gdfast-bench", "cd", "cp"} | UNCHECKED
# pytest options that take a value (the value is no test path)
PYTEST_VALUE_OPTIONS = {"-p", "-k", "-m", "-o", "-c", "-n", "--rootdir", "--ignore", "--deselect"}


def command_name(word: str) -> Optional[str]:
    """The command a word runs, if this test knows it: by name, or a repository script."""
    if re.fullmatch(r"[\w.-]*/[\w./-]+", word) and (ROOT / word).is_file():
        return "script"
    name = os.path.basename(word)  # /tmp/venv/bin/pip is pip
    return name if name in COMMANDS else None


class ShellChecker:
    """Checks one block's (or inline span's) commands in order, following `cd` while it stays in
    the repository (after `cd /elsewhere`, relative paths are not checked)."""

    def __init__(self, where: str, options: Set[str], extras: Dict[str, Set[str]]) -> None:
        self.where, self.options, self.extras = where, options, extras
        # what the `pip install '.[extras]'` before a command brought (None: nothing installed
        # here, the reader's environment is unknown)
        self.installed: Optional[Set[str]] = None
        self.cwd: Optional[pathlib.Path] = ROOT
        self.problems: List[str] = []
        self.checked: Set[pathlib.Path] = set()  # each path reported once

    def problem(self, text: str) -> None:
        self.problems.append(f"{self.where}: {text}")

    def exists(self, path: str, what: str) -> None:
        if self.cwd is None or os.path.isabs(path) or self.cwd / path in self.checked:
            return
        self.checked.add(self.cwd / path)
        if not (self.cwd / path).exists():
            self.problem(f"{what} {path!r} does not exist (in {self.cwd.relative_to(ROOT)}/)")

    def line(self, line: str, require_known: bool = True) -> None:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: List[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|", "&"):
                if command:
                    self.command(command, require_known)
                command = []
            else:
                command.append(token)

    def command(self, words: List[str], require_known: bool) -> None:
        while words and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):  # VAR=value prefixes
            words = words[1:]
        if not words:
            return
        name = command_name(words[0])
        if name is None:
            if require_known:
                self.problem(f"{words[0]!r}: a command this test does not know (add it)")
            return
        args = words[1:]
        self.arguments(name, words[0], args, require_known)
        for word in args:  # any other repository path named, whatever the command
            if ("/" in word and not re.search(r"[*?<>$\[]", word) and self.cwd == ROOT
                    and (ROOT / word.split("/")[0]).exists()):
                self.exists(word, "path")

    def arguments(self, name: str, word0: str, args: List[str], require_known: bool) -> None:
        if name == "script":
            self.exists(word0, "script")
        elif name == "pip":
            for word in args:
                m = re.fullmatch(r"\.\[([\w,-]+)\]", word)
                for extra in m.group(1).split(",") if m else []:
                    if extra not in self.extras:
                        self.problem(f"extra [{extra}] is not in pyproject.toml")
                    self.installed = (self.installed or set()) | self.extras.get(extra, set())
        elif name in ("python", "python3"):
            if args[:1] == ["-m"] and len(args) > 1:
                sub = {"pytest": "pytest", "gdfast.bench": "gdfast-bench"}.get(args[1])
                if sub:
                    self.command([sub, *args[2:]], require_known)
            elif args and not args[0].startswith("-"):
                self.exists(args[0], "script")
        elif name == "pytest":
            skip_next = False
            for word in args:
                if skip_next or word.startswith("-"):
                    skip_next = word in PYTEST_VALUE_OPTIONS
                    continue
                self.exists(word.split("::")[0], "test path")
        elif name == "gdfast-bench":
            for word in args:
                if word.startswith("--") and word.split("=")[0] not in self.options:
                    self.problem(f"gdfast-bench has no option {word.split('=')[0]}")
            # the one optional dependency an option needs (the bench runs without the others)
            if "--plot" in args and self.installed is not None and \
                    "matplotlib" not in self.installed:
                self.problem("gdfast-bench --plot needs matplotlib, which the extras installed "
                             "before it do not bring")
        elif name == "cd" and args:
            if os.path.isabs(args[0]) or args[0].startswith("~"):
                self.cwd = None
            elif self.cwd is not None:
                self.exists(args[0], "folder")
                self.cwd = (self.cwd / args[0]).resolve()
        elif name == "cp":
            for word in [w for w in args if not w.startswith("-")][:-1]:
                self.exists(word, "source")


def shell_lines(code: str) -> List[str]:
    return [line for line in code.replace("\\\n", " ").splitlines() if line.strip()]


def is_listing(block: Block) -> bool:
    """An unlabelled block whose first word is no command: a listing (README's Layout)."""
    words = shlex.split(shell_lines(block.code)[0], comments=True) or [""]
    while len(words) > 1 and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):
        words = words[1:]
    return block.lang == "" and command_name(words[0]) is None


@pytest.mark.parametrize("block", params([b for b in BLOCKS if b.lang in SHELL]))
def test_shell_block_names_what_exists(block: Optional[Block]) -> None:
    assert block is not None
    if is_listing(block):
        pytest.skip(f"{block}: a listing, not commands (fence it as ```text)")
    checker = ShellChecker(str(block), bench_options(), extras())
    for line in shell_lines(block.code):
        checker.line(line)
    assert not checker.problems, "\n".join(checker.problems)


def inline_spans() -> List[tuple]:
    """(section, text) of every `inline code` span outside the fenced blocks."""
    prose = FENCE.sub(lambda m: re.sub(r"\S", " ", m.group(0)), TEXT)  # offsets kept
    return [(section_at(TEXT, m.start()), " ".join(m.group(1).split()))
            for m in re.finditer(r"`([^`]+)`", prose)]


def test_inline_commands_and_paths_exist() -> None:
    """Inline spans that are commands (`pip install '.[bench]' && gdfast-bench`), repository
    paths (`gdfast/bench/reference.py`), gdfast-bench options mentioned on their own in a section
    about gdfast-bench (`--compare old.json`), and relative link targets."""
    if not TEXT:
        pytest.skip(NO_README)
    options, declared = bench_options(), extras()
    bench_sections = {section_at(TEXT, m.start()) for m in re.finditer("gdfast-bench", TEXT)}
    problems: List[str] = []
    checked: Dict[str, int] = {"command": 0, "path": 0, "option": 0, "link": 0}
    for section, span in inline_spans():
        checker = ShellChecker(f"`{span}` ({section})", options, declared)
        if re.fullmatch(r"\.?[\w-]+(/[\w.-]+)+/?", span) and (ROOT / span.split("/")[0]).exists():
            checker.exists(span, "path")
            checked["path"] += 1
        elif command_name(span.split()[0]) is not None:
            checker.line(span, require_known=False)
            checked["command"] += 1
        elif span.startswith("--") and section in bench_sections:
            checker.command(["gdfast-bench", *span.split()], require_known=False)
            checked["option"] += 1
        problems += checker.problems
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", TEXT)):
        if not re.match(r"[a-z]+:|#", target):
            checked["link"] += 1
            if not (ROOT / target.split("#")[0]).exists():
                problems.append(f"link target {target!r} does not exist")
    assert not problems, "\n".join(problems)
    # README has many commands and paths: a pattern that silently stopped matching fails here.
    assert checked["command"] and checked["path"], checked


def test_checker_catches_mistakes() -> None:
    """The checks above can fail: a missing extra, option, script, test path or folder, an
    unknown command, and --plot without matplotlib."""
    checker = ShellChecker("example", {"--json", "--plot"}, {"bench": {"torch"}})
    checker.line("pip install '.[bench,nope]' && gdfast-bench --json x --jsn y --plot p.png")
    checker.line("python bench/no_such.py && pytest tests/no_such.py -k x")
    checker.line("cd no_such_folder && frobnicate")
    assert [p.split(": ", 1)[1] for p in checker.problems] == [
        "extra [nope] is not in pyproject.toml",
        "gdfast-bench has no option --jsn",
        "gdfast-bench --plot needs matplotlib, which the extras installed before it do not bring",
        "script 'bench/no_such.py' does not exist (in ./)",
        "test path 'tests/no_such.py' does not exist (in ./)",
        "folder 'no_such_folder' does not exist (in ./)",
        "'frobnicate': a command this test does not know (add it)",
    ]


# ---------------------------------------------------------------------------------------------
# Importing from a checkout: after a plain (non-editable) `pip install .`, `python` or
# `python -m pytest` started in the checkout's root finds its gdfast/ folder first, which holds
# no compiled _core; Python's own error blames a circular import. Simulated without a second
# install: a copy of the package folder without _core, in a folder that looks like a checkout,
# imported with `python -S` (no site-packages: neither the installed gdfast nor an editable
# install's import hook can answer first).


def import_from(cwd: pathlib.Path, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-S", "-c", "import gdfast"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def checkout(tmp_path: pathlib.Path, marker: Optional[str] = "pyproject.toml",
             core: bool = False) -> pathlib.Path:
    """tmp_path/checkout/gdfast: the installed package's Python files (no compiled _core unless
    `core`: then an unloadable one), with `marker` (pyproject.toml or csrc/) beside gdfast/."""
    root = tmp_path / "checkout"
    compiled = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    shutil.copytree(os.path.dirname(gdfast.__file__), root / "gdfast", ignore=lambda _, names: [
        n for n in names if n.endswith(compiled) or n == "__pycache__"])
    if marker == "csrc":
        (root / "csrc").mkdir()
    elif marker:
        (root / marker).write_text("")
    if core:
        (root / "gdfast" / f"_core{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_text("junk")
    return root


@pytest.mark.parametrize("marker", ["pyproject.toml", "csrc"])
def test_import_from_checkout_says_what_to_do(tmp_path: pathlib.Path, marker: str) -> None:
    root = checkout(tmp_path, marker)
    result = import_from(root)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: gdfast was imported from its source tree"), message
    assert str(root / "gdfast") in message and "circular import" not in result.stderr
    assert "no installed gdfast was found" in message and "`pip install -e .`" in message


def test_import_from_checkout_names_the_hidden_install(tmp_path: pathlib.Path) -> None:
    """An installed gdfast elsewhere on sys.path (a stand-in package here) is named, with the
    advice to run from another folder; the checkout is searched first as `python` puts the
    current folder first."""
    root = checkout(tmp_path)
    installed = tmp_path / "site-packages" / "gdfast"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    message = import_from(root, pythonpath=str(installed.parent)).stderr.strip().splitlines()[-1]
    assert f"the installed gdfast ({installed}) is hidden by it" in message, message
    assert "Run Python from another folder" in message and "`pytest`, not" in message


def test_other_import_failures_keep_their_error(tmp_path: pathlib.Path) -> None:
    """A _core that is there but does not load, and a gdfast folder that is no checkout, keep
    Python's own error: the message above would be wrong for them."""
    result = import_from(checkout(tmp_path / "a", core=True))
    assert "ImportError" in result.stderr and "source tree" not in result.stderr
    result = import_from(checkout(tmp_path / "b", marker=None))
    assert "circular import" in result.stderr and "source tree" not in result.stderr
