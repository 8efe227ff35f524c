"""Order files are read in whatever encoding sellers' tools write, one record at a time."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from streams.order_files import OrderFile, sniff_encoding

TEXT = "订单编号,买家会员名\r\n1,小鱼儿\r\n"


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (TEXT.encode("gbk"), "gb18030"),
        (TEXT.encode("gb18030"), "gb18030"),
        (TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8-sig"),
        (TEXT.encode("utf-16"), "utf-16"),
        (b"order_id,customer\n1,c1\n", "utf-8"),
    ],
    ids=["gbk", "gb18030", "utf-8", "utf-8-bom", "utf-16", "ascii"],
)
def test_the_encoding_is_told_from_the_first_bytes(data: bytes, encoding: str) -> None:
    assert sniff_encoding(data) == encoding


def test_a_multibyte_character_cut_by_the_sniff_window_is_still_utf8() -> None:
    assert sniff_encoding("小鱼儿".encode()[:-1]) == "utf-8"


@pytest.mark.parametrize("encoding", ["gbk", "utf-8-sig", "utf-8", "utf-16"])
def test_records_come_decoded_with_the_line_they_start_on(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes('订单编号,留言\r\n1,"两行\r\n留言"\r\n\r\n2,好\r\n'.encode(encoding))
    with OrderFile(path) as file:
        records = [(r.line, r.fields) for r in file.records()]
        assert file.position() == path.stat().st_size
    assert records == [
        (1, ["订单编号", "留言"]),
        (2, ["1", "两行\r\n留言"]),
        (4, []),
        (5, ["2", "好"]),
    ]


def test_undecodable_bytes_arrive_replaced_for_the_row_to_reject(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(
        "订单编号,买家会员名\r\n1,小鱼".encode("gbk") + b"\xff" + "儿\r\n".encode("gbk")
    )
    with OrderFile(path) as file:
        assert [r.fields for r in file.records()][1] == ["1", "小鱼\ufffd儿"]


def test_a_record_that_is_not_csv_is_an_error_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(b'a,b\n1,"' + b"x" * 200_000 + b"\n2,3\n")
    with OrderFile(path) as file:
        records = list(file.records())
    assert records[1].error is not None and "not CSV" in records[1].error
    assert records[-1].fields == ["2", "3"]


def test_json_lines_come_as_bytes_without_the_bom(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + b'{"a": 1}\n\n{"b": 2}\n')
    with OrderFile(path) as file:
        assert list(file.lines()) == [(1, b'{"a": 1}\n'), (2, b"\n"), (3, b'{"b": 2}\n')]
