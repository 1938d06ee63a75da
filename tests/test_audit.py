"""`ovdet audit` and `ovdet.audit`: per-group zero-shot predictions with a chi-square test."""

import csv
import math

import numpy as np
import pytest
from PIL import Image

from ovdet import cli
from ovdet.audit import (
    AuditRow, GroupsFileError, audit, chi_square_independence, read_groups, summarise,
)
from ovdet.classify import Classifier

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ("cat", "astronaut", "rocket")


def ovdet(monkeypatch, *args) -> int:
    """Run `ovdet ARGS` in-process."""
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory, chelsea_path, astronaut_path):
    """6 images: crops and flips of the two examples; group "cats" and group "space"."""
    d = tmp_path_factory.mktemp("audit")
    cat, astro = Image.open(chelsea_path).convert("RGB"), Image.open(astronaut_path).convert("RGB")
    cat.save(d / "cat1.jpg")
    cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(d / "cat2.jpg")
    cat.crop((50, 0, 350, 300)).save(d / "cat3.png")
    astro.resize((256, 256)).save(d / "astro1.jpg")
    astro.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((200, 200)).save(d / "astro2.jpg")
    astro.crop((100, 0, 400, 300)).save(d / "astro3.png")
    return d


GROUP_OF = {"cat1.jpg": "cats", "cat2.jpg": "cats", "cat3.png": "cats",
            "astro1.jpg": "space", "astro2.jpg": "space", "astro3.png": "space"}


@pytest.fixture
def groups_csv(folder, tmp_path):
    path = tmp_path / "groups.csv"
    rows = ["image,group,notes"]
    for i, (name, group) in enumerate(GROUP_OF.items()):
        # three ways to name an image: file name, path as listed, absolute path
        entry = [name, str(folder / name), str((folder / name).resolve())][i % 3]
        rows.append(f"{entry},{group},x")
    path.write_text("\n".join(rows) + "\n")
    return path


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_audit_cli_writes_predictions_summary_and_chart(monkeypatch, capsys, folder, groups_csv, tiny_clip, tmp_path):
    out = tmp_path / "report"
    rc = ovdet(monkeypatch, "audit", "--images", folder, "--classes", ",".join(CLASSES), "--groups", groups_csv,
               "--model", tiny_clip, "--device", "cpu", "--precision", "fp32", "--out", out)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 6 and sorted(r["image"].split("/")[-1] for r in rows) == sorted(GROUP_OF)
    assert list(rows[0]) == ["image", "group"] + [f"p_{c}" for c in CLASSES] + ["top_class"]
    for r in rows:
        probs = np.array([float(r[f"p_{c}"]) for c in CLASSES])
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)
        assert r["top_class"] == CLASSES[int(np.argmax(probs))]
        assert r["group"] == GROUP_OF[r["image"].split("/")[-1]]
    summary = read_csv(out / "summary.csv")
    assert [s["group"] for s in summary] == ["cats", "space"]
    assert sum(int(s["n"]) for s in summary) == 6
    for s in summary:
        assert sum(int(s[f"top_{c}"]) for c in CLASSES) == int(s["n"]) == 3
        assert sum(float(s[f"share_{c}"]) for c in CLASSES) == pytest.approx(1.0, abs=1e-3)
        # summary counts agree with the per-image predictions
        mine = [r for r in rows if r["group"] == s["group"]]
        for c in CLASSES:
            assert int(s[f"top_{c}"]) == sum(r["top_class"] == c for r in mine)
            assert float(s[f"mean_p_{c}"]) == pytest.approx(np.mean([float(r[f"p_{c}"]) for r in mine]), abs=1e-5)
    chart = out / "chart.png"
    assert chart.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(chart) as im:
        im.verify()
    with Image.open(chart) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    assert "cats" in captured.out and "space" in captured.out and "chi-square" in captured.out
    # 6 images: either the random model puts one class on top everywhere (nothing to test) or
    # every expected count is below 5 and the report says not to over-read the p-value
    assert "not applicable" in captured.out or "expected counts are below 5" in captured.err


def test_unreadable_image_is_skipped_and_reported(monkeypatch, capsys, folder, tiny_clip, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("cat1.jpg", "astro1.jpg"):
        (mixed / name).write_bytes((folder / name).read_bytes())
    (mixed / "broken.jpg").write_bytes(b"not an image")
    groups = tmp_path / "g.csv"
    groups.write_text("image,group\ncat1.jpg,a\nastro1.jpg,b\nbroken.jpg,b\n")
    rc = ovdet(monkeypatch, "audit", "--images", mixed, "--classes", "cat,rocket", "--groups", groups,
               "--model", tiny_clip, "--device", "cpu", "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 1 and "skipping" in err and "broken.jpg" in err
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert sorted(r["image"].split("/")[-1] for r in rows) == ["astro1.jpg", "cat1.jpg"]


@pytest.mark.parametrize("content, needles", [
    ("image,group\ncat1.jpg,cats\ncat2.jpg,cats\ncat3.png,cats\nastro1.jpg,space\nastro2.jpg,space\nmars.jpg,space\n",
     ["does not match", "1 image(s) have no row (astro3.png)", "1 row(s) name no image given (mars.jpg)"]),
    ("file,team\ncat1.jpg,cats\n", ["needs a header with columns image,group", "file,team"]),
    ("image,group\ncat1.jpg,cats\ncat1.jpg,dogs\n", ["appears twice (lines 2 and 3)"]),
    ("image,group\ncat1.jpg,\n", ["line 2: image cat1.jpg has no group"]),
])
def test_groups_file_that_does_not_match_is_one_clear_error(monkeypatch, capsys, folder, tiny_clip, tmp_path,
                                                            content, needles):
    groups = tmp_path / "groups.csv"
    groups.write_text(content)
    rc = ovdet(monkeypatch, "audit", "--images", folder, "--classes", "cat,rocket", "--groups", groups,
               "--model", tiny_clip, "--out", tmp_path / "out")
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0]
    assert not (tmp_path / "out").exists()  # nothing was classified or written


def test_read_groups_matches_relative_paths_and_spreadsheet_bom(folder, tmp_path):
    paths = [str(folder / n) for n in sorted(GROUP_OF)]
    groups = tmp_path / "g.csv"
    groups.write_bytes("\ufeffImage,Group\n".encode("utf-8") + "".join(
        f"./{n},{g}\n" for n, g in GROUP_OF.items()).encode("utf-8"))
    assert read_groups(groups, paths, root=folder) == {str(folder / n): g for n, g in GROUP_OF.items()}
    with pytest.raises(GroupsFileError, match="cannot read groups file"):
        read_groups(tmp_path / "missing.csv", paths)


def test_python_audit_matches_classify(folder, tiny_clip):
    clf = Classifier.from_pretrained(str(tiny_clip), device="cpu", precision="fp32", cache_text=False)
    groups = {str(folder / n): g for n, g in GROUP_OF.items()}
    report = audit(folder, CLASSES, model=clf, groups=groups)
    assert len(report.rows) == 6 and report.summary.groups == ("cats", "space")
    assert report.summary.sizes.tolist() == [3, 3] and report.summary.counts.sum() == 6
    expected = clf.classify_batch([r.image for r in report.rows], CLASSES)
    for row, res in zip(report.rows, expected):
        assert np.allclose(row.probs, res.probs, atol=1e-6)
    alone = audit(folder, CLASSES, model=clf)  # no groups: one group, no test
    assert alone.summary.groups == ("all",) and not alone.summary.chi2.testable
    assert "not applicable" in alone.summary.table()


# -- statistics -------------------------------------------------------------------------------
def test_chi_square_independence_by_hand():
    counts = np.array([[9, 3], [2, 8]])  # rows: groups, columns: top classes
    n = 22
    expected = np.outer(counts.sum(1), counts.sum(0)) / n
    statistic = ((counts - expected) ** 2 / expected).sum()
    result = chi_square_independence(counts)
    assert result.statistic == pytest.approx(statistic) and result.dof == 1 and result.n == n
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)))  # dof 1 closed form
    assert result.cramers_v == pytest.approx(math.sqrt(statistic / n))
    assert result.low_expected == 0 and result.warning() is None
    # a class that is never on top carries no information and is dropped, not a zero division
    padded = chi_square_independence(np.array([[9, 3, 0], [2, 8, 0]]))
    assert padded.statistic == pytest.approx(statistic) and padded.dof == 1
    small = chi_square_independence(np.array([[2, 1], [0, 3]]))
    assert small.low_expected == 4 and "unreliable" in small.warning()
    same = chi_square_independence(np.array([[3, 0], [4, 0]]))
    assert not same.testable and "same top class" in same.describe()


def test_summary_counts_add_up():
    rng = np.random.default_rng(0)
    rows = [AuditRow(f"{i}.jpg", "xyz"[i % 3], rng.dirichlet(np.ones(4)).astype(np.float32)) for i in range(40)]
    s = summarise(rows, ("a", "b", "c", "d"))
    assert s.sizes.sum() == 40 and (s.counts.sum(axis=1) == s.sizes).all()
    assert np.allclose(s.shares.sum(axis=1), 1.0) and np.allclose(s.mean_probs.sum(axis=1), 1.0, atol=1e-5)
    assert len(s.table().splitlines()) == 1 + 3 + 1 + 1  # header, groups, (all), test


def test_chi_square_larger_table_matches_pearson_by_hand():
    stats = pytest.importorskip("scipy.stats")
    counts = np.array([[12, 5, 3], [4, 9, 7], [6, 6, 8]])
    expected = np.outer(counts.sum(1), counts.sum(0)) / counts.sum()
    statistic = ((counts - expected) ** 2 / expected).sum()
    result = chi_square_independence(counts)
    assert result.statistic == pytest.approx(statistic) and result.dof == 4
    assert result.p_value == pytest.approx(stats.chi2.sf(statistic, 4))


def test_audit_package_init_only_names_what_it_offers():
    import ast
    import importlib
    from pathlib import Path

    import ovdet.audit as package

    tree = ast.parse(Path(package.__file__).read_text())
    defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defs == ["__getattr__"]  # no logic in the package's __init__
    for name in package.__all__:  # every advertised name resolves, and is defined in a module of the package
        obj = getattr(package, name)
        module = getattr(obj, "__module__", None)
        assert module is None or module.startswith("ovdet.audit."), (name, module)
