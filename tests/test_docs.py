"""The documentation's examples, run as written, and the site built as CI would build it.

The pages are README.md (the front page) and every docs/*.md page of the mkdocs site. Each
docs page's ```python blocks are executed in order in one namespace per page (later blocks use
names the earlier ones define, as a reader of that page would), in a fresh folder holding the
images and the video the page's examples name, with preset names resolved through the
documented weights lookup ($OVDET_WEIGHTS/<preset>/) to tiny random checkpoints
(tools/make_tiny_models.py's layout). A block whose first line starts with "# needs your own"
needs the reader's own data: it is compiled (names and syntax), not run, and says so. The
README's Python examples are copies of blocks on a docs page (docs/detect.md), run there.

The ```bash blocks are not run (they download models and read datasets): every `ovdet`
command in them must name a real command and only flags that command's `--help` lists, and
every `python tools/...` script must exist. `mkdocs build --strict` must pass offline.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def page_name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def code_blocks(page: Path, language: str) -> list[str]:
    """The page's ```language blocks, also those indented inside admonitions (dedented)."""
    fence = re.compile(rf"^([ \t]*)```{language}\n(.*?)^\1```", re.S | re.M)
    return [textwrap.dedent(body) for _, body in fence.findall(page.read_text(encoding="utf-8"))]


def python_blocks(page: Path = README) -> list[str]:
    return code_blocks(page, "python")


def named_files(code: str, suffixes: tuple[str, ...]) -> set[str]:
    """String literals in the examples that name files with these suffixes ("street.jpg")."""
    return {m for m in re.findall(r"[\"']([\w./-]+)[\"']", code) if m.lower().endswith(suffixes)}


def write_video(path: Path, frame_rgb: np.ndarray, frames: int = 6) -> None:
    import cv2

    h, w = frame_rgb.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for i in range(frames):
        writer.write(np.ascontiguousarray(np.roll(frame_rgb, 4 * i, axis=1)[..., ::-1]))
    writer.release()


def reader_folder(folder: Path, code: str, chelsea_path: Path) -> None:
    """Put into `folder` the files the examples name: images, videos, input folders."""
    from PIL import Image

    for name in named_files(code, (".jpg", ".jpeg", ".png")):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(chelsea_path, folder / name)
    for name in named_files(code, (".mp4",)):
        write_video(folder / name, np.asarray(Image.open(chelsea_path).convert("RGB")))
    for sub in re.findall(r"\(\s*[\"']([\w.-]+)/[\"']", code):  # input folders: a call's first argument ("photos/")
        (folder / sub).mkdir(exist_ok=True)
        shutil.copy(chelsea_path, folder / sub / "chelsea.jpg")


def check_detections(namespace: dict) -> None:
    """What the detection examples promise holds on their results."""
    from ovdet import Detections

    dets, same = namespace["dets"], namespace["same"]
    assert isinstance(dets, Detections) and isinstance(same, Detections)
    assert len(same) == len(namespace["sv_dets"]) and same.labels == namespace["sv_dets"].data["class_name"].tolist()
    assert namespace["picture"].dtype == np.uint8 and namespace["picture"].ndim == 3


def check_heat(namespace: dict) -> None:
    heat = namespace["heat"]
    assert heat.dtype == np.float32 and heat.min() >= 0 and heat.max() <= 1


CHECKS = {"docs/detect.md": check_detections, "docs/explain.md": check_heat}
PYTHON_PAGES = [page for page in PAGES[1:] if python_blocks(page)]  # the README's: copies, run on their page


def test_the_docs_have_python_examples():
    assert {page_name(p) for p in PYTHON_PAGES} >= set(CHECKS), "a page with checked examples lost them"
    blocks = [code for page in PYTHON_PAGES for code in python_blocks(page)]
    assert len(blocks) >= 10
    names = "\n".join(blocks)
    for used in ("ovdet.adapters.", "ovdet.draw.annotate", "to_supervision", "from_supervision", "dets.labels"):
        assert used in names, used


def test_the_readme_python_examples_run_on_a_docs_page():
    """The front page's examples are verbatim copies of a docs page's blocks, which run there
    (once, not twice: the suite's time matters)."""
    readme = python_blocks(README)
    assert len(readme) >= 2
    on_pages = {code for page in PYTHON_PAGES for code in python_blocks(page)}
    for i, code in enumerate(readme):
        assert code in on_pages, f"README python block {i + 1} is on no docs page, so it would not run:\n{code}"


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=page_name)
def test_python_blocks_run_as_written(page, tmp_path, monkeypatch, tiny_dir, chelsea_path):
    blocks = python_blocks(page)
    reader_folder(tmp_path, "\n".join(blocks), chelsea_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OVDET_WEIGHTS", str(tiny_dir / "weights"))
    namespace: dict = {"__name__": "docs"}
    for i, code in enumerate(blocks):
        where = f"{page_name(page)} python block {i + 1}"
        if code.startswith("# needs your own"):  # the user's data: compiled (names and syntax), not run
            compile(code, where, "exec")
            continue
        try:
            exec(compile(code, where, "exec"), namespace)
        except Exception as exc:  # name the block: the traceback alone points into exec
            raise AssertionError(f"{where} fails:\n{code}") from exc
    if page_name(page) in CHECKS:
        CHECKS[page_name(page)](namespace)


# -- shell examples --------------------------------------------------------------------------
def shell_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every command in the pages' ```bash blocks (continuations joined,
    comments dropped, split at &&, ||, | and ;), leading VAR=value assignments removed."""
    found = []
    for page in PAGES:
        for block in code_blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError as exc:
                    raise AssertionError(f"{page_name(page)}: cannot parse `{line}`: {exc}") from exc
                command: list[str] = []
                for token in [*tokens, "&&"]:
                    if token in ("&&", "||", "|", ";"):
                        while command and re.fullmatch(r"[A-Za-z_]\w*=.*", command[0]):
                            command.pop(0)
                        if command:
                            found.append((page_name(page), command))
                        command = []
                    else:
                        command.append(token)
    return found


def help_options(words: tuple[str, ...]) -> set[str]:
    """The options `ovdet WORDS --help` lists (in-process: the CLI only builds its parsers)."""
    from ovdet.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main([*words, "--help"])
        except SystemExit as exc:
            code = exc.code
    assert code in (0, None), f"`ovdet {' '.join(words)} --help` fails: is it a command?"
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", out.getvalue()))


def test_shell_examples_name_real_commands_and_flags():
    commands = shell_commands()
    ovdet = [(page, argv) for page, argv in commands if argv[0] == "ovdet"]
    assert len(ovdet) >= 40 and {page for page, _ in ovdet} >= {"README.md", "docs/detect.md", "docs/label.md"}
    known: dict[tuple[str, ...], set[str]] = {}
    for page, argv in ovdet:
        words = tuple(argv[1:3] if argv[1:2] == ["weights"] else argv[1:2] if not argv[1].startswith("-") else [])
        if words not in known:
            known[words] = help_options(words)
        flags = {arg.split("=", 1)[0] for arg in argv[1 + len(words):] if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", arg)}
        unknown = flags - known[words]
        assert not unknown, f"{page}: `{shlex.join(argv)}`: `ovdet {' '.join(words)}` has no {sorted(unknown)}"
    for page, argv in commands:
        if argv[0] == "python" and len(argv) > 1 and argv[1].startswith("tools/"):
            assert (ROOT / argv[1]).is_file(), f"{page}: {argv[1]} does not exist"


def test_the_two_commands_open_the_readme():
    """A newcomer copies them verbatim; .ci/run runs the second."""
    first, second = code_blocks(README, "bash")[:2]
    assert first == 'pip install -e . && ovdet detect examples/chelsea.jpg --classes "cat,remote control"\n'
    assert second == 'pip install -e ".[test]" && python -m pytest -q\n'
    assert second.strip() in (ROOT / ".ci" / "run").read_text()
    assert README.read_text(encoding="utf-8").index(first) < 200


def test_the_readme_is_a_front_page_linking_every_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    for page in PAGES[1:]:
        if page.name != "index.md":
            assert f"(docs/{page.name}" in text, f"the README's table does not link docs/{page.name}"


# -- the docs stay true to the code ----------------------------------------------------------
def test_paths_the_docs_name_exist():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for path in re.findall(r"(?<![\w/.-])((?:ovdet|tools|tests)/[\w/-]+\.(?:py|json|html|js|css))", text):
            assert (ROOT / path).is_file(), f"{page_name(page)} names {path}, which does not exist"


def test_the_architecture_page_names_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = {p.name for p in (ROOT / "ovdet").rglob("*.py") if p.name != "__init__.py"}
    missing = sorted(name for name in modules if not re.search(rf"(?<![\w]){re.escape(name)}", text))
    assert not missing, f"docs/architecture.md does not name {missing}"
    files = {p.name for folder in ("ovdet", "tools", "tests") for p in (ROOT / folder).rglob("*.py")}
    gone = sorted(set(re.findall(r"(?<![\w/])(\w+\.py)\b", text)) - files)
    assert not gone, f"docs/architecture.md names {gone}, which no longer exist"


# -- the site ----------------------------------------------------------------------------------
def test_mkdocs_build_strict_offline(tmp_path):
    """The site builds with every warning an error (broken links and anchors, pages left out of
    the nav), and its pages load nothing from the network (no fonts, scripts or styles)."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed (pip install -e '.[docs]'):\n{proc.stderr}"
    built = {p.relative_to(site).parent.as_posix() for p in site.rglob("index.html")}
    for page in PAGES[1:]:
        assert (page.stem if page.stem != "index" else ".") in built, page.name
    for html in site.rglob("*.html"):
        fetched = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"((?:https?:)?//[^\"]+)\"",
                             html.read_text(encoding="utf-8"))
        assert not fetched, f"{html.relative_to(site)} loads {fetched}"
