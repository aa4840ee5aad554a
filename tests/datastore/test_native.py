"""The native (Arrow) CSV path gives the csv module path's records, messages and errors, byte
for byte, on plain files, awkward ones and broken ones; and it does engage on plain data."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobs_plugin.data import formats, native, operations
from jobs_plugin.data.models import Sheet, SheetConfig
from tests.datastore.test_columnar import CONFIG, PLAIN, TRICKY

pytestmark = pytest.mark.skipif(
    not native.available(), reason="pyarrow is not installed (the `arrow` extra)"
)
NUMBERS = [
    "0", "-0", "-0.0", "0.0", "5.", "007", "0012.5", "-12.50", "123456789012345",
    "1234567890123456", "999999999999999.9", "0.0001", "0.00012", "0.00001", "-0.5",
    "1.000000000000001", "1.0000000000000001", "12345678.1234567", "+5", "1_0", "١٢",
    "3.14159265358979", "-999999999999999",
]  # fmt: skip
ARROW_NUMBERS = [n for n in PLAIN["number"] if "e" not in n]  # an exponent: the Python path
HEADER = ["s", "n", "b", "d", "e"]
FIELDS = SheetConfig(name="S", fields=CONFIG.fields[:-1])  # a field for each column
"""``CONFIG`` less its required field without a column (no block of it can be encoded)."""


def _sheet(config: SheetConfig = FIELDS) -> Sheet:
    return Sheet(
        id="us_sh_test",
        organization_id="us_org_test",
        workbook_id="us_wb_test",
        name=config.name,
        slug="s",
        config=config.model_dump(by_alias=True, exclude_none=True, mode="json"),
        position=0,
    )


def _table(path: Path, options: dict[str, Any]) -> tuple[formats.Table, Any]:
    stream = open(path, "rb")  # noqa: SIM115 - closed by the caller
    return formats.read_tables(stream, path.suffix[1:], path.stat().st_size, options)[0], stream


def _python(path: Path, size: int, options: dict[str, Any] | None = None) -> Any:
    """Records (or the error) of the csv module's path, chunk by chunk."""
    table, stream = _table(path, options or {})
    writer = operations._TableWriter(table, _sheet())
    out: list[Any] = []
    try:
        while rows := writer.validator.check_unique(writer.records(table.take(size))):
            out += rows
    except formats.DataError as exc:
        return f"error: {exc}"
    finally:
        stream.close()
    return out


def _native(path: Path, size: int, options: dict[str, Any] | None = None, skip: int = 0) -> Any:
    """Records (or the error) of the extract's chunk source, and how many chunks were
    encoded by Arrow."""
    table, stream = _table(path, options or {})
    chunks = operations._Chunks(
        operations._TableWriter(table, _sheet()),
        lambda: open(path, "rb"),  # noqa: SIM115 - the chunks close it
        lambda: _table(path, options or {}),
    )
    out: list[Any] = []
    encoded = 0
    try:
        if skip:
            chunks.skip(skip, size)
        while got := chunks.take(size):
            if isinstance(got, operations.store.Encoded):
                values = orjson.loads(got.text)
                assert got.text == orjson.dumps(values)  # orjson's own bytes
                assert len(values) == got.count
                out += [(v, None) for v in values]
                encoded += 1
            else:
                out += got
    except formats.DataError as exc:
        return f"error: {exc}", encoded
    finally:
        chunks.close()
        stream.close()
    return out, encoded


def _same(path: Path, size: int = 50, options: dict[str, Any] | None = None) -> int:
    """The two paths agree; the number of chunks Arrow encoded."""
    want = _python(path, size, options)
    got, encoded = _native(path, size, options)
    assert orjson.dumps(got) == orjson.dumps(want)
    return encoded


def _write(path: Path, rows: list[list[str]], delimiter: str = ",", bom: bool = False) -> Path:
    text = io.StringIO()
    csv.writer(text, delimiter=delimiter, lineterminator="\n").writerows([HEADER, *rows])
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.getvalue().encode())
    return path


def _plain_row(rnd: random.Random, i: int) -> list[str]:
    number = rnd.choice(
        [str(i), f"{rnd.uniform(-1e6, 1e6):.{rnd.randint(0, 6)}f}", rnd.choice(ARROW_NUMBERS)]
    )
    return [
        rnd.choice(PLAIN["string"]) + str(i),
        number,
        rnd.choice(PLAIN["boolean"]),
        rnd.choice(PLAIN["date"]),
        rnd.choice(PLAIN["enum"]),
    ]


@pytest.mark.parametrize("seed", range(25))
def test_random_files_give_the_same_records(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    odd = 0.0 if seed < 5 else 0.01  # the first seeds: plain cells only
    rows = []
    for i in range(400):
        row = _plain_row(rnd, i)
        for j in range(len(row)):
            if rnd.random() < odd:
                row[j] = rnd.choice(TRICKY)
        rows.append(row)
    delimiter = [",", ";", "\t"][seed % 3]
    ext = "tsv" if delimiter == "\t" else "csv"
    path = _write(tmp_path / f"f.{ext}", rows, delimiter, bom=seed % 4 == 1)
    encoded = _same(path)
    if seed < 5:
        assert encoded == 8  # every chunk went through Arrow


@pytest.mark.parametrize("value", NUMBERS + TRICKY)
def test_each_awkward_cell_gives_the_same_record(tmp_path: Path, value: str) -> None:
    rnd = random.Random(1)
    rows = [_plain_row(rnd, i) for i in range(60)]
    for column in range(len(HEADER)):
        rows[10 + column][column] = value
    _same(_write(tmp_path / "f.csv", rows), size=20)


def _plain_file(path: Path, rows: int = 3000) -> Path:
    rnd = random.Random(3)
    return _write(path, [_plain_row(rnd, i) for i in range(rows)])


def _insert_line(path: Path, at: int, line: bytes) -> Path:
    lines = path.read_bytes().split(b"\n")
    lines.insert(at, line)
    path.write_bytes(b"\n".join(lines))
    return path


@pytest.mark.parametrize(
    "line",
    [
        b'x,"quoted"garbage,true,2020-01-01,red',  # csv: ',' expected after '"'
        b"x,1,true,2020-01-01,red,extra",  # ragged
        b"x,1",  # ragged
        b"",  # a blank line
        b",,,,",  # a row of empty cells
        b"   ",  # a blank-looking row of one cell
        b'x,1,true,2020-01-01,"r""ed"',  # an escaped quote
        b'"multi\nline",1,true,2020-01-01,red',  # a quoted line break
        b'x,1,true,2020-01-01,"red',  # a field left open to the end of the file
        b"x\xff\xfe,1,true,2020-01-01,red",  # not UTF-8, past the sample
        b"x," + b"9" * 140_000 + b",true,2020-01-01,red",  # over the csv module's limit
    ],
)
def test_a_broken_or_odd_line_deep_in_the_file(
    tmp_path: Path, line: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow reads the first chunks; from the line on, the csv module decides as before."""
    monkeypatch.setattr(native, "BLOCK_BYTES", 8192)  # the line is many blocks in
    path = _insert_line(_plain_file(tmp_path / "f.csv"), 2500, line)
    want = _python(path, 500)
    got, encoded = _native(path, 500)
    assert orjson.dumps(got) == orjson.dumps(want)
    # The stream's guard sees the bytes when Arrow reads ahead, before their rows come out.
    assert encoded >= 1 or b'"' in line


def test_resume_skips_the_committed_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "BLOCK_BYTES", 8192)
    path = _insert_line(_plain_file(tmp_path / "f.csv"), 1200, b",,,,")
    path = _insert_line(path, 1800, b"x,1,true,2020-01-01,red,extra")
    want = _python(path, 100)
    for skip in (1, 99, 100, 1199, 1500, 1900, 2999, 5000):
        got, _ = _native(path, 100, skip=skip)
        assert orjson.dumps(got) == orjson.dumps(want[skip:]), skip


def test_small_and_header_only_files(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("s,n,b,d,e\nx,1,true,2020-01-01,red\n")
    assert _same(tmp_path / "one.csv") == 1
    (tmp_path / "none.csv").write_text("s,n,b,d,e\n")
    _same(tmp_path / "none.csv")
    (tmp_path / "noeol.csv").write_text("\n\ns,n,b,d,e\r\nx,1,true,2020-01-01,red")
    _same(tmp_path / "noeol.csv")
    (tmp_path / "nohead.csv").write_text("x,1,true,2020-01-01,red\ny,2,false,2020-01-02,green\n")
    _same(tmp_path / "nohead.csv", options={"header": False})


def test_the_setting_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs_plugin.settings import get_settings

    path = _plain_file(tmp_path / "f.csv", 200)
    monkeypatch.setenv("PREFECT_JOBS_NATIVE_CSV", "false")
    get_settings.cache_clear()
    got, encoded = _native(path, 50)
    assert encoded == 0 and got == _python(path, 50)
