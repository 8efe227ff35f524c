"""Reading an order file as a stream of records, whatever its encoding, in bounded memory.

Seller backends export GBK/GB18030 (Excel's habit in China), UTF-8, or UTF-8 with a BOM;
`sniff_encoding` tells them apart from the first 64 KiB. Records come one at a time with
the line they start on, so a reject can name it; a broken record is an error value, the
next one reads on.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from schemas.order_mapping import OrderFileError

SNIFF_BYTES = 64 * 1024
READ_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class Record:
    """One CSV record: its fields, or why it could not be split into fields."""

    line: int
    fields: list[str]
    error: str | None = None


def sniff_encoding(head: bytes) -> str:
    """utf-8-sig / utf-16 by their BOM; utf-8 when the head decodes as UTF-8; else gb18030
    (a superset of GBK and GB2312, what Chinese Excel and seller backends write)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8"


class OrderFile:
    """An open order file: the binary stream (for progress) and its decoded text."""

    def __init__(self, path: Path, encoding: str = "auto") -> None:
        try:
            self.raw: BinaryIO = open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115
        except OSError as exc:
            raise OrderFileError(f"cannot read {path}: {exc.strerror}") from None
        self.path = path
        self.size = path.stat().st_size
        head = self.raw.read(SNIFF_BYTES)
        self.raw.seek(0)
        self.encoding = sniff_encoding(head) if encoding == "auto" else encoding
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            self.raw.close()
            raise OrderFileError(f"unknown encoding {encoding!r}") from None

    def position(self) -> int:
        """Bytes read so far (to the read buffer's precision)."""
        return self.raw.tell()

    def records(self, delimiter: str = ",") -> Iterator[Record]:
        """Every CSV record; undecodable bytes arrive as U+FFFD for the row to reject.

        A field past csv's limit (128 KiB: an unclosed quote eating the file) is an error
        record, and reading goes on after it.
        """
        text = io.TextIOWrapper(self.raw, encoding=self.encoding, errors="replace", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        last = 0
        try:
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield Record(last + 1, [], f"not CSV: {exc}")
                    last = reader.line_num
                    continue
                yield Record(last + 1, fields)
                last = reader.line_num
        finally:
            if not self.raw.closed:
                text.detach()  # the binary file stays ours (position, close)

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """Every line as bytes (JSON Lines), without a leading BOM."""
        for number, line in enumerate(self.raw, 1):
            yield number, line.removeprefix(codecs.BOM_UTF8) if number == 1 else line

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> OrderFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
