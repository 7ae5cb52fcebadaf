"""README.md and docs/*.md say only what is so: their links resolve, their commands exist with the
flags they use, the tests they name exist, the configuration tables list every field, and
README's test command is the one CI runs."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "CHANGELOG.md"]

# What a command line in a ```bash, ```sh or ```console block may start with.
PROGRAMS = {"inception", ".venv/bin/inception", "python", ".venv/bin/python", "bash", "torchrun",
            "git", "pip", "cd"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", ";", "|", "&"}


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- Markdown --------------------------------------------------------------------------------------

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", text).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(text: str) -> list[str]:
    return [t for t in LINK.findall(prose(text))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]  # http:, https:, mailto:, ...


# -- command lines ---------------------------------------------------------------------------------

def command_lines(body: str, language: str) -> list[str]:
    """The shell commands of a code block: continuation lines joined; in a console block only
    the lines after a `$ ` prompt."""
    lines, current = [], ""
    for raw in body.splitlines():
        line = raw.rstrip()
        if language == "console" and not current:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if current.strip():
                lines.append(" ".join(current.split()))
            current = ""
    return lines


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of a line (split at &&, ||, ;, |), comments dropped, leading
    VAR=value assignments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    out = []
    for words in commands:
        while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def doc_commands() -> list[tuple[str, list[str]]]:
    """(page, words) for every command in every shell code block of README.md and docs/."""
    out = []
    for page in (README, *DOCS):
        for language, body in code_blocks(page.read_text()):
            if language in SHELL_BLOCKS:
                for line in command_lines(body, language):
                    out += [(_id(page), words) for words in split_commands(line)]
    return out


def inception_argv(words: list[str]) -> list[str] | None:
    """The arguments after `inception` of a command that runs it, else None."""
    if Path(words[0]).name == "inception":
        return words[1:]
    for i in range(1, len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "inception":
            return words[i + 2:]
    return None


def _parser() -> argparse.ArgumentParser:
    from inception.parser import build_parser

    return build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def flag_problems(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """What in `argv` the `inception` parser does not have: an unknown top-level flag, a
    subcommand that does not exist, a flag its subcommand lacks (flags must be spelt out)."""
    commands = subcommands(parser)
    problems, current, name = [], parser, "inception"
    for word in argv:
        if word.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", word):
            flag = word.split("=", 1)[0]
            if flag not in current._option_string_actions:
                problems.append(f"{name} has no {flag}")
        elif current is parser:
            if word not in commands:
                problems.append(f"no command {word!r}")
                break
            current, name = commands[word], f"inception {word}"
    return problems


COMMANDS = doc_commands()


def _label(item: tuple[str, list[str]]) -> str:
    return f"{item[0]}: {' '.join(item[1])}"[:90]


# -- tests -----------------------------------------------------------------------------------------

def test_the_markdown_helpers():
    assert slug("Caffe's `bvlc_googlenet`: the paper's network") == \
        "caffes-bvlc_googlenet-the-papers-network"
    assert slug("Threads on the CPU") == "threads-on-the-cpu"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
    assert relative_links("[x](a.md#b) ![y](p.png) [z](https://e.org) `[c](no.md)`") == \
        ["a.md#b", "p.png"]
    assert command_lines("$ inception --help\nusage: ...\n", "console") == ["inception --help"]
    assert command_lines("a \\\n  --b  # c\n\nd\n", "bash") == ["a --b # c", "d"]
    assert split_commands("X=1 bash s.sh && .venv/bin/python -m pytest -m 'not slow' # c") == \
        [["bash", "s.sh"], [".venv/bin/python", "-m", "pytest", "-m", "not slow"]]
    assert inception_argv(["torchrun", "--nnodes", "2", "-m", "inception", "train"]) == ["train"]
    assert inception_argv([".venv/bin/inception", "eval", "RUN"]) == ["eval", "RUN"]
    assert inception_argv(["bash", "x.sh"]) is None


def test_docs_have_pages_and_commands():
    names = {p.name for p in DOCS}
    assert {"training.md", "configuration.md", "inference.md", "gpu.md", "distributed.md",
            "caffe.md", "speed.md", "claims.md"} <= names
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_every_relative_link_resolves(page):
    text = page.read_text()
    broken = []
    for target in relative_links(text):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            broken.append(f"{target}: no such file")
        elif anchor:
            if file.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(file.read_text()):
                broken.append(f"{target}: {_id(file)} has no heading #{anchor}")
    assert broken == [], f"{_id(page)}: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve()
              for t in relative_links(README.read_text())}
    assert [_id(p) for p in DOCS if p.resolve() not in linked] == []


def test_every_command_line_starts_with_a_known_program():
    unknown = [_label(c) for c in COMMANDS if c[1][0] not in PROGRAMS]
    assert unknown == []


def test_scripts_named_by_commands_exist():
    """`bash FILE` and `python FILE` (not -m or -c) name files of this repository."""
    missing = []
    for page, words in COMMANDS:
        if Path(words[0]).name in ("bash", "python") and len(words) > 1 \
                and not words[1].startswith("-") and not (ROOT / words[1]).is_file():
            missing.append(f"{page}: {words[1]}")
    assert missing == []


@pytest.mark.parametrize("item", [c for c in COMMANDS if inception_argv(c[1]) is not None],
                         ids=_label)
def test_every_inception_command_and_flag_exists(item):
    """The subcommand exists and its parser has every --flag used, spelt out in full."""
    assert flag_problems(inception_argv(item[1]), _parser()) == []


def test_the_flag_checker_finds_mistakes():
    parser = _parser()
    assert flag_problems(["train", "--epochs", "1", "--threads", "2"], parser) == []
    assert flag_problems(["train", "--epoch", "1"], parser) == ["inception train has no --epoch"]
    assert flag_problems(["fly"], parser) == ["no command 'fly'"]
    assert flag_problems(["--nope", "summary"], parser) == ["inception has no --nope"]


def test_the_readme_tour_shows_every_command():
    used = {argv[0] for _, words in COMMANDS if _ == "README.md"
            for argv in [inception_argv(words)] if argv and not argv[0].startswith("-")}
    assert set(subcommands(_parser())) - used == set()


def test_readme_runs_the_test_command_ci_runs():
    """.ci/run runs README's test command verbatim: the line after its 'verbatim' comment is a
    line of one of README's bash blocks, under the comment that names it."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    marker = next(i for i, line in enumerate(ci) if "verbatim" in line)
    command = ci[marker + 1].strip()
    assert command == "bash scripts/setup.sh && .venv/bin/python -m pytest"
    blocks = [body.splitlines() for lang, body in code_blocks(README.read_text())
              if lang == "bash"]
    assert any(line == command and "# the tests" in lines[i - 1]
               for lines in blocks for i, line in enumerate(lines))


REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:benchmarks|scripts|tests|src|docs)/[\w./-]*\w\.(?:py|sh|md|png))")


def test_every_repository_path_the_docs_name_exists():
    """`benchmarks/...py`, `scripts/...`, `tests/...`, `src/...` and `docs/...` named anywhere in
    README.md or docs/, code blocks included."""
    missing = [f"{_id(p)}: {path}" for p in (README, *DOCS)
               for path in sorted(set(REPO_PATH.findall(p.read_text())))
               if not (ROOT / path).exists()]
    assert missing == []


@pytest.mark.parametrize("argv", [["summary"], ["summary", "--module-cost"]], ids=" ".join)
def test_the_summary_output_quoted_in_the_docs_is_what_it_prints(argv, capsys):
    """docs/model.md quotes `.venv/bin/inception summary` (and `--module-cost`) whole: exact
    counts, the same on any machine."""
    from inception.cli import main

    page = (ROOT / "docs" / "model.md").read_text()
    quoted = page.split(f"Output of `.venv/bin/inception {' '.join(argv)}`", 1)[1]
    quoted = quoted.split("```\n", 1)[1].split("```", 1)[0]
    assert main(argv) == 0
    assert capsys.readouterr().out == quoted


@pytest.mark.parametrize("page", [README, *DOCS], ids=_id)
def test_python_examples_parse(page):
    for language, body in code_blocks(page.read_text()):
        if language == "python":
            ast.parse(body)


TEST_NAME = re.compile(r"`([\w./]*)::(\w+)`")


def test_every_test_named_in_the_docs_exists():
    missing = []
    for page in (README, *DOCS):
        for line in page.read_text().splitlines():
            current = None
            for file, name in TEST_NAME.findall(line):
                current = file or current
                source = ROOT / "tests" / (current or "")
                if not source.is_file() or f"def {name}(" not in source.read_text():
                    missing.append(f"{_id(page)}: {current}::{name}")
    assert missing == []


def test_every_row_of_the_readme_trouble_table_names_its_tests():
    readme = README.read_text()
    table = readme.split("## When things go wrong", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) >= 20  # the rows of every failure the suite tests
    for row in rows:
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        assert TEST_NAME.findall(cell), row


def test_the_configuration_page_lists_every_field_and_real_flags():
    from inception.config import GoogLeNetConfig
    from inception.train.config import TrainConfig

    page = (ROOT / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (`--[^|]*) \|", page, re.M)
    listed = {name for name, _ in rows}
    fields = {f.name for cls in (GoogLeNetConfig, TrainConfig) for f in dataclasses.fields(cls)}
    assert fields - {"model"} <= listed
    assert listed <= fields
    train = subcommands(_parser())["train"]
    flags = {f for _, cell in rows for f in re.findall(r"`(--[\w-]+)`", cell)}
    flags |= set(re.findall(r"^\| `(--[\w-]+)", page, re.M))  # the flags that are not fields
    assert len(flags) > 50
    assert flags - set(train._option_string_actions) == set()


def test_no_page_narrates_how_it_was_made():
    """The docs describe the project, not the sessions that built it."""
    pattern = re.compile(r"\bissue \d+|\bthis session|\bthe last session|\bearlier session", re.I)
    found = [f"{_id(p)}: {m.group(0)}" for p in PAGES for m in pattern.finditer(p.read_text())]
    assert found == []
