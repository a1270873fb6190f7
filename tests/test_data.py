"""Readers: every supported format and every bad-input path."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.data import DatasetError, parse_tags, read_dataset
from trainer.split import build_labels


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("['php', 'sql']", ["php", "sql"]),
        ('["c#", ".net"]', ["c#", ".net"]),
        ("php|sql", ["php", "sql"]),
        ("<php><sql>", ["php", "sql"]),
        ("python", ["python"]),
        ("['a', 'a', 'b']", ["a", "b"]),
        ("[]", []),
        ("", []),
        ("['unclosed'", None),
        ("[1, 2]", None),
        ("<php><sql", None),
        ("{'a': 1}", None),
    ],
)
def test_parse_tags(cell: str, expected: list[str] | None) -> None:
    assert parse_tags(cell) == expected


def test_wide_tsv_with_list_literals_and_quoted_titles(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.tsv",
        "title\ttags\n"
        "How to sort a list?\t['python', 'sorting']\n"
        '"Say ""hello"" in   Java"\t[\'java\']\n',
    )
    data = read_dataset(path)
    assert data.titles == ["How to sort a list?", 'Say "hello" in Java']
    assert data.tags == [["python", "sorting"], ["java"]]


def test_wide_csv_with_pipe_and_angle_tags_and_bom(tmp_path: Path) -> None:
    path = write(
        tmp_path, "t.csv", "\ufeffTags,Title,Extra\nphp|sql,Join tables,x\n<c><c++>,Pointers,y\n"
    )
    data = read_dataset(path)
    assert data.titles == ["Join tables", "Pointers"]
    assert data.tags == [["php", "sql"], ["c", "c++"]]


def test_first_tag_only_in_wide_format(tmp_path: Path) -> None:
    path = write(tmp_path, "t.tsv", "title\ttags\nA\t['x', 'y']\n")
    assert read_dataset(path, first_tag_only=True).tags == [["x"]]


LONG = (
    "post_id,tag_name,tag_id,tag_position,title\n"
    "1,sql,3,1,Join two tables\n"
    "1,mysql,2,0,Join two tables\n"
    "2,python,1,0,Read a file\n"
    "3,java,4,1,Only a second tag\n"
)


def test_long_csv_groups_rows_by_post_in_tag_position_order(tmp_path: Path) -> None:
    data = read_dataset(write(tmp_path, "long.csv", LONG))
    assert data.titles == ["Join two tables", "Read a file", "Only a second tag"]
    assert data.tags == [["mysql", "sql"], ["python"], ["java"]]


def test_long_csv_first_tag_only_keeps_position_zero(tmp_path: Path) -> None:
    data = read_dataset(write(tmp_path, "long.csv", LONG), first_tag_only=True)
    assert data.tags == [["mysql"], ["python"]]
    assert data.skipped["no first tag"] == 1


def test_blank_titles_and_bad_tag_cells_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.tsv",
        "title\ttags\n   \t['a']\nGood\t['a']\nBad\t['a'\nNone\t[]\nShort\n",
    )
    data = read_dataset(path)
    assert data.titles == ["Good"]
    assert data.skipped == {"blank title": 1, "unparsable tags": 1, "no tags": 1, "short row": 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("question,labels\nx,y\n", "unknown format: expected columns title, tags or post_id"),
        ("title\tlabel\nx\ty\n", "missing column(s) tags"),
        ("post_id,tag_name,title\n1,a,x\n", "missing column(s) tag_id, tag_position"),
        ("title\ttags\n \t['a']\nx\t[\n", "no usable rows"),
        ("title\ttags\n", "no usable rows"),
        ("", "unknown format"),
    ],
)
def test_bad_files_fail_with_one_line_naming_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, "bad.tsv", text)
    with pytest.raises(DatasetError) as info:
        read_dataset(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        read_dataset(tmp_path / "nope.tsv")
    binary = tmp_path / "bin.tsv"
    binary.write_bytes(b"title\ttags\n\xff\xfe\x00\x81\t['a']\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_dataset(binary)


def test_min_samples_per_label_drops_rare_tags_most_frequent_first() -> None:
    tags = [["a", "b"], ["a"], ["c", "a"], ["b"]]
    assert build_labels(tags, 1) == ["a", "b", "c"]
    assert build_labels(tags, 2) == ["a", "b"]
    assert build_labels(tags, 4) == []
