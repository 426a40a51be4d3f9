"""Reading the pairs of a batch: PAIRS.csv (columns, ids, relative paths, errors) and --fixed/--moving globs."""
from __future__ import annotations

from pathlib import Path

import pytest

from torchalign.batch.pairs import Pair, glob_pairs, image_stem, read_pairs
from torchalign.errors import InputError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_minimal_csv_ids_are_row_numbers_and_paths_are_relative_to_the_csv(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "study" / "pairs.csv", "fixed,moving\na.nii.gz,b.nii.gz\n\n/abs/c.nii,d.nii\n")
    pairs = read_pairs(csv_path)
    study = (tmp_path / "study").resolve()
    assert pairs == [Pair("1", str(study / "a.nii.gz"), str(study / "b.nii.gz")),
                     Pair("2", "/abs/c.nii", str(study / "d.nii"))]
    assert pairs[0].inputs() == {"fixed": str(study / "a.nii.gz"), "moving": str(study / "b.nii.gz")}


def test_optional_columns_any_order_and_empty_cells(tmp_path: Path) -> None:
    text = ("moving_labels, id ,fixed,moving,fixed_labels,fixed_mask,fixed_points,moving_points\n"
            "ml.nii.gz,s01,f.nii.gz,m.nii.gz,fl.nii.gz,,fp.csv,mp.csv\n"
            ",,f.nii.gz,m2.nii.gz,,mask.nii.gz,,\n")
    first, second = read_pairs(write(tmp_path / "p.csv", text))
    assert first.id == "s01" and first.fixed_labels.endswith("fl.nii.gz") and first.moving_points.endswith("mp.csv")
    assert first.fixed_mask is None and first.moving_mask is None
    assert list(first.inputs()) == ["fixed", "moving", "fixed_labels", "moving_labels", "fixed_points",
                                    "moving_points"]
    assert second.id == "2" and second.fixed_mask.endswith("mask.nii.gz") and second.fixed_labels is None


@pytest.mark.parametrize("text, message", [
    ("fixed,image\na,b\n", "missing column(s) moving"),
    ("fixed,moving,fixed_label\na,b,c\n", "unknown column(s) 'fixed_label'"),
    ("fixed,moving,fixed\na,b,c\n", "column(s) fixed appear more than once"),
    ("id,fixed,moving\nx,a,b\nx,c,d\n", "duplicate id 'x'"),
    ("id,fixed,moving\n2,a,b\n,c,d\n", "duplicate id '2'"),
    ("fixed,moving\na,\n", "line 2: the moving cell is empty"),
    ("fixed,moving,fixed_labels\na,b,fl\n", "line 2: give both fixed_labels and moving_labels"),
    ("fixed,moving,moving_points\na,b,mp\n", "give both fixed_points and moving_points"),
    ("id,fixed,moving\n../up,a,b\n", "id '../up' cannot name an output folder"),
    ("id,fixed,moving\n.hidden,a,b\n", "cannot name an output folder"),
    ("fixed,moving\na,b,c\n", "line 2: 3 cells but the header names 2 columns"),
    ("fixed,moving\n", "no pairs"),
    ("\n\n", "empty file"),
])
def test_bad_csv_is_one_input_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "pairs.csv", text)
    with pytest.raises(InputError) as err:
        read_pairs(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"duplicate id 'x': .*line 3 and .*line 5"):
        read_pairs(write(tmp_path / "p.csv", "id,fixed,moving\n\nx,a,b\ny,a,b\nx,a,c\n"))


def test_missing_or_binary_csv(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such pairs file"):
        read_pairs(tmp_path / "absent.csv")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00fixed")
    with pytest.raises(InputError, match="not a UTF-8 text file"):
        read_pairs(binary)


def test_glob_pairs_ids_from_names_sorted_template_left_out(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    for name in ("sub-02.nii.gz", "sub-01.nii.gz", "template.nii.gz", "notes.txt.gz"):
        write(scans / name, "x")
    pairs = glob_pairs(scans / "template.nii.gz", str(scans / "*.nii.gz"))
    assert [p.id for p in pairs] == ["sub-01", "sub-02"]
    assert all(p.fixed == str((scans / "template.nii.gz").resolve()) for p in pairs)
    assert pairs[1].moving == str((scans / "sub-02.nii.gz").resolve())


def test_glob_pairs_recursive_and_errors(tmp_path: Path) -> None:
    write(tmp_path / "a" / "x.nii.gz", "x")
    write(tmp_path / "b" / "x.nii.gz", "x")
    fixed = write(tmp_path / "t.nii", "x")
    with pytest.raises(InputError, match=r"duplicate id 'x': .*a/x.nii.gz and .*b/x.nii.gz"):
        glob_pairs(fixed, str(tmp_path / "**" / "*.nii.gz"))
    with pytest.raises(InputError, match="matches no file"):
        glob_pairs(fixed, str(tmp_path / "*.mha"))
    with pytest.raises(InputError, match="--fixed .*: no such file"):
        glob_pairs(tmp_path / "absent.nii", str(tmp_path / "**" / "*.nii.gz"))


def test_image_stem() -> None:
    assert image_stem("/d/sub-01_T1w.nii.gz") == "sub-01_T1w"
    assert image_stem("scan.v2.mha") == "scan.v2"
    assert image_stem("a.nii") == "a"
