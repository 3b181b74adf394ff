"""Issue 15 item 1: a rows: project's table and outputs are checked before anything is paid.

Every problem is one line naming the data file (or the project file), the line and the column;
exit 2; nothing written (no state, no renders, no lock). The commands run in this process
(``in_process``) except where the process matters: a FIFO as the table (a reader would hang; the
real CLI's timeout catches that) and ``render``/``plan --row`` refusing before paying."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_cli import Workspace, base_env, small_workspace

from kling_render.project.table import MAX_ROWS, key_problem

PROJECT = """\
version: 1
name: catalog
rows: {from: data/products.csv, key: sku}
defaults: {model: kling-v3.0-std/image-to-video, duration: 3}
shots:
  - id: intro
    prompt: "shot intro: the studio"
    image: images/mug.png
  - id: hero
    prompt: "shot hero: the {{ row.name }}"
    image: images/mug.png
  - id: outro
    prompt: "shot outro: {{ row.tagline }}"
    image: images/mug-side.png
output: {path: "renders/{{ row.sku }}.mp4", width: 320, height: 180}
"""
CSV = "sku,name,tagline\nmug-01,Blue Mug,coffee\nmug-02,Red Mug,tea\n"


def workspace(tmp_path: Path, csv: str | bytes = CSV, project: str = PROJECT, data: str = "products.csv") -> Workspace:
    ws = small_workspace(tmp_path / "p", base_env(), project, in_process=True)
    (ws.root / "data").mkdir()
    if isinstance(csv, bytes):
        (ws.root / "data" / data).write_bytes(csv)
    else:
        (ws.root / "data" / data).write_text(csv, encoding="utf-8")
    return ws


def refused(ws: Workspace, *expected: str, command: str = "validate") -> list[str]:
    """Run ``command``; it must exit 2 with exactly ``expected`` as its error lines, writing nothing."""
    before = sorted(p.relative_to(ws.root).as_posix() for p in ws.root.rglob("*"))
    done = ws.cli(command, str(ws.project), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line.removeprefix("error: ") for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == list(expected), errors
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.relative_to(ws.root).as_posix() for p in ws.root.rglob("*")) == before  # nothing written
    return errors


def test_a_valid_table_validates(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    done = ws.cli("validate", str(ws.project), "--json")
    assert done.returncode == 0, done.stderr
    assert '"rows": 2' in done.stdout and '"clips": 5' in done.stdout and '"shots": 6' in done.stdout


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        (CSV + "mug-01,Again,x\n", ["data/products.csv:4: sku: duplicate key 'mug-01' (first on line 2)"]),
        (
            CSV + "MUG-02,Case,x\n",
            [
                "data/products.csv:4: sku: duplicate key 'MUG-02' (first on line 3 as 'mug-02': "
                "keys name files, so they must differ in more than case)"
            ],
        ),
        (CSV + ",No key,x\n", ["data/products.csv:4: sku: empty key (every row needs one)"]),
        (
            CSV + "mug 03,Space,x\n",
            [
                "data/products.csv:4: sku: key 'mug 03' cannot name files and shots: use 1 to 64 "
                "letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
            ],
        ),
        (
            CSV + "../x,Escape,x\n",
            [
                "data/products.csv:4: sku: key '../x' cannot name files and shots: use 1 to 64 "
                "letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
            ],
        ),
        (
            CSV + "nul.1,Device,x\n",
            [
                "data/products.csv:4: sku: key 'nul.1' is a device name on Windows (no file may "
                "be called that): choose another"
            ],
        ),
        (
            CSV + "mug-03,Blue, Mug,x\n",
            ["data/products.csv:4: 4 fields, but the header has 3; quote values that contain commas"],
        ),
        (CSV + "mug-03,short\n", ["data/products.csv:4: 2 fields, but the header has 3"]),
        ("sku,name,name\nmug-01,a,b\n", ["data/products.csv:1: name: duplicate column name (first is column 2)"]),
        (
            "sku, name,tagline\nmug-01,a,b\n",
            [
                "data/products.csv:1: ' name': the column name has spaces around it (in "
                "CSV a space after a comma is part of the field): remove them"
            ],
        ),
        (
            "id,name,tagline\nmug-01,a,b\n",
            ["data/products.csv:1: sku: no such column for rows.key (the columns are id, name, tagline)"],
        ),
        (
            "SKU,name,tagline\nmug-01,a,b\n",
            [
                "data/products.csv:1: sku: no such column for rows.key (the columns are "
                "SKU, name, tagline; did you mean 'SKU'?)"
            ],
        ),
        ("sku,name,tagline\n", ["data/products.csv:1: no rows below the header"]),
        ("\n\n", ["data/products.csv:1: the file is empty (the first row names the columns)"]),
        (
            'sku,name,tagline\nmug-01,"a "quoted" word",x\n',
            [
                "data/products.csv:2: invalid CSV: ',' expected after "
                "'\"' (RFC 4180: fields with commas, quotes or line breaks "
                'are quoted, and a quote inside one is doubled: "")'
            ],
        ),
        # A quoted value over three lines: the next record's errors name its own first line.
        (
            'sku,name,tagline\nmug-01,"Blue\nMug\nXL",x\nmug-01,b,c\n',
            ["data/products.csv:5: sku: duplicate key 'mug-01' (first on line 2)"],
        ),
    ],
)
def test_table_errors_name_the_file_line_and_column(tmp_path: Path, csv: str, expected: list[str]) -> None:
    refused(workspace(tmp_path, csv), *expected)


def test_every_bad_row_is_reported_at_once(tmp_path: Path) -> None:
    csv = CSV + "mug-01,x,y\n,x,y\nbad key,x,y\n"
    refused(
        workspace(tmp_path, csv),
        "data/products.csv:4: sku: duplicate key 'mug-01' (first on line 2)",
        "data/products.csv:5: sku: empty key (every row needs one)",
        "data/products.csv:6: sku: key 'bad key' cannot name files and shots: use 1 to 64 letters, digits, '.', '_' "
        "or '-', starting and ending with a letter or digit",
    )


def test_bad_encoding_names_the_line(tmp_path: Path) -> None:
    data = CSV.encode() + "mug-03,Caf\u00e9,x\n".encode("latin-1")
    refused(
        workspace(tmp_path, data),
        "data/products.csv:4: not UTF-8 text: invalid continuation byte at byte 69 (save the file as UTF-8)",
    )


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    ws = workspace(tmp_path, b"\xef\xbb\xbf" + CSV.replace("\n", "\r\n").encode())
    done = ws.cli("validate", str(ws.project))
    assert done.returncode == 0, done.stderr


def test_more_rows_than_the_bound_stop_at_the_line_past_it(tmp_path: Path) -> None:
    rows = "".join(f"sku-{n},n,t\n" for n in range(MAX_ROWS + 5))
    refused(
        workspace(tmp_path, "sku,name,tagline\n" + rows),
        f"data/products.csv:{MAX_ROWS + 2}: more than {MAX_ROWS:,} rows (a table may have at most that; split it "
        "into projects)",
    )


def test_an_oversized_value_and_a_nul_are_refused(tmp_path: Path) -> None:
    refused(
        workspace(tmp_path, CSV + "mug-03," + "x" * 100_001 + ",y\n"),
        "data/products.csv:4: name: the value is 100,001 characters (at most 100,000)",
    )


def test_a_column_a_template_uses_must_exist(tmp_path: Path) -> None:
    project = PROJECT.replace("row.tagline", "row.taglin")
    refused(
        workspace(tmp_path, project=project),
        "data/products.csv:1: taglin: no such column, used by shots[2].prompt at project.yaml:13 (the columns are "
        "sku, name, tagline; did you mean 'tagline'?)",
    )
    project = PROJECT.replace('prompt: "shot intro: the studio"', 'prompt: "{{ prompts.p }}"').replace(
        "defaults:", 'prompts: {p: "a {{ row.colour }} studio"}\ndefaults:'
    )
    refused(
        workspace(tmp_path / "snippet", project=project),
        "data/products.csv:1: colour: no such column, used by prompts.p at project.yaml:4 (in shots[0].prompt) (the "
        "columns are sku, name, tagline)",
    )


def test_a_row_missing_a_value_in_a_yaml_list_names_the_row(tmp_path: Path) -> None:
    rows = "- {sku: mug-01, name: Blue, tagline: coffee}\n- {sku: mug-02, name: Red}\n"
    ws = workspace(tmp_path, rows, PROJECT.replace("products.csv", "products.yaml"), "products.yaml")
    refused(ws, "data/products.yaml:2: tagline: row 'mug-02' has no value, used by shots[2].prompt at project.yaml:13")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "{sku: a}\n",
            "data/products.yaml:1: a rows data file in YAML or JSON is a non-empty list of mappings (one per row)",
        ),
        (
            "- {sku: a, name: x, tagline: [1, 2]}\n",
            "data/products.yaml:1: [0].tagline: a list is not text (a row's values are text)",
        ),
        ("- {name: x, tagline: y}\n", "data/products.yaml:1: [0]: no sku (rows.key: every row needs its key)"),
        ("- {sku: a, name: x, tagline: y, name: z}\n", "data/products.yaml:1:33: [0].name: duplicate key"),
    ],
)
def test_yaml_table_errors(tmp_path: Path, text: str, expected: str) -> None:
    ws = workspace(tmp_path, text, PROJECT.replace("products.csv", "products.yaml"), "products.yaml")
    refused(ws, expected)


def test_a_json_table_with_a_bad_value(tmp_path: Path) -> None:
    text = '[\n  {"sku": "a", "name": "x", "tagline": "y"},\n  {"sku": "a", "name": "x", "tagline": {"k": 1}}\n]\n'
    ws = workspace(tmp_path, text, PROJECT.replace("products.csv", "products.json"), "products.json")
    refused(ws, "data/products.json:3: [1].tagline: a mapping is not text (a row's values are text)")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("../outside.csv", "project.yaml:3: rows.from: '../outside.csv' is outside the project directory"),
        ("data/missing.csv", "project.yaml:3: rows.from: file not found: data/missing.csv"),
        (
            "data/products.txt",
            "project.yaml:3: rows.from: data/products.txt: the data file must be .csv, or a .yaml, .yml or .json list",
        ),
    ],
)
def test_where_the_table_is(tmp_path: Path, source: str, expected: str) -> None:
    ws = workspace(tmp_path, project=PROJECT.replace("data/products.csv", source))
    (ws.root / "data" / "products.txt").write_text(CSV)
    (tmp_path / "outside.csv").write_text(CSV)
    refused(ws, expected)


def test_special_and_oversized_data_files_are_never_read(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    ws.in_process = False  # a FIFO opened by mistake would hang this process
    data = ws.root / "data" / "products.csv"
    data.unlink()
    os.mkfifo(data)  # a reader that opened it would hang: the CLI's timeout would fail the test
    refused(
        ws, "data/products.csv: a named pipe (FIFO) is not a regular file: rows: needs a data file (nothing was read)"
    )
    data.unlink()
    data.symlink_to("/dev/zero")
    refused(ws, "project.yaml:3: rows.from: 'data/products.csv' is outside the project directory")  # /dev/zero
    (ws.root / "data" / "dev").symlink_to("/dev/zero")
    data.unlink()
    data.symlink_to("dev")  # inside, as far as the name goes: the stat still says device
    refused(ws, "project.yaml:3: rows.from: 'data/products.csv' is outside the project directory")
    data.unlink()
    try:  # a device inside the project (root may make one): refused from its stat
        os.mknod(data, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    except (PermissionError, AttributeError):
        pass
    else:
        refused(ws, "data/products.csv: a device is not a regular file: rows: needs a data file (nothing was read)")
        data.unlink()
    with open(data, "wb") as fh:
        fh.truncate(17 * 1024 * 1024)  # sparse: 17 MB announced
    refused(ws, "data/products.csv: the file is 17.8 MB; a rows data file may be at most 16 MB")


def test_output_path_must_differ_per_row(tmp_path: Path) -> None:
    constant = PROJECT.replace('"renders/{{ row.sku }}.mp4"', "renders/final.mp4")
    refused(
        workspace(tmp_path / "a", project=constant),
        "project.yaml:15: output.path: renders/final.mp4 is the same file for 2 rows: 'mug-01' "
        "(data/products.csv:2), 'mug-02' (data/products.csv:3); every row's cut needs its own file, so output.path "
        "must use the row's key, e.g. renders/{{ row.sku }}.mp4",
    )
    # Another column whose values collide is found the same way: by the paths the rows give.
    by_name = PROJECT.replace("row.sku }}.mp4", "row.tagline }}.mp4")
    refused(
        workspace(tmp_path / "b", CSV.replace(",tea", ",coffee"), project=by_name),
        "project.yaml:15: output.path: renders/coffee.mp4 is the same file for 2 rows: 'mug-01' "
        "(data/products.csv:2), 'mug-02' (data/products.csv:3); every row's cut needs its own file, so output.path "
        "must use the row's key, e.g. renders/{{ row.sku }}.mp4",
    )
    # Different spellings of one file are one file.
    spelled = PROJECT.replace('"renders/{{ row.sku }}.mp4"', '"renders/{{ row.name | lower }}.mp4"')
    refused(
        workspace(tmp_path / "c", CSV.replace("Red Mug", "BLUE MUG"), project=spelled),
        "project.yaml:15: output.path: renders/blue mug.mp4 is the same file for 2 rows: 'mug-01' "
        "(data/products.csv:2), 'mug-02' (data/products.csv:3); every row's cut needs its own file, so output.path "
        "must use the row's key, e.g. renders/{{ row.sku }}.mp4",
    )
    # One row: no other row to differ from, so the key is changed to see whether the path follows.
    refused(
        workspace(tmp_path / "d", "sku,name,tagline\nmug-01,a,b\n", project=constant),
        "project.yaml:15: output.path: renders/final.mp4 does not change with the row's key (row 'mug-01', "
        "data/products.csv:2): every row's cut needs its own file, so output.path must use all of the key, e.g. "
        "renders/{{ row.sku }}.mp4",
    )


@pytest.mark.parametrize(
    ("path", "csv", "expected"),
    [
        # Another column whose values differ today: the next row may repeat one.
        (
            '"renders/{{ row.name }}.mp4"',
            CSV,
            "renders/Blue Mug.mp4 does not change with the row's key (row 'mug-01', "
            "data/products.csv:2, and 1 more row(s))",
        ),
        # Part of the key: distinct for these rows, but mug-01 and mug-07 would share a file.
        (
            '"renders/{{ row.sku[:5] }}.mp4"',
            "sku,name,tagline\nmug-01,a,b\ncup-02,c,d\n",
            "renders/mug-0.mp4 does not change with the row's key (row 'mug-01', data/products.csv:2, and 1 more "
            "row(s))",
        ),
        (
            "\"renders/{{ row.sku | truncate(6, True, '', 0) }}.mp4\"",
            CSV,
            "renders/mug-01.mp4 does not change with the row's key (row 'mug-01', data/products.csv:2, and 1 more "
            "row(s))",
        ),
        (
            '"renders/{{ row.sku[-2:] }}.mp4"',
            "sku,name,tagline\nmug-01,a,b\ncup-02,c,d\n",
            "renders/01.mp4 does not change with the row's key (row 'mug-01', data/products.csv:2, and 1 more row(s))",
        ),
        # Only some rows ignore the key.
        (
            "\"renders/{% if row.tagline == 'tea' %}tea{% else %}{{ row.sku }}{% endif %}.mp4\"",
            CSV,
            "renders/tea.mp4 does not change with the row's key (row 'mug-02', data/products.csv:3)",
        ),
    ],
)
def test_output_path_must_follow_all_of_the_key(tmp_path: Path, path: str, csv: str, expected: str) -> None:
    project = PROJECT.replace('"renders/{{ row.sku }}.mp4"', path)
    refused(
        workspace(tmp_path, csv, project=project),
        f"project.yaml:15: output.path: {expected}: every row's cut needs its own file, so output.path must use all "
        "of the key, e.g. renders/{{ row.sku }}.mp4",
    )


@pytest.mark.parametrize(
    "path",
    [
        '"renders/{{ row.sku | lower }}.mp4"',  # keys differing only in case are duplicates already
        "\"renders/{{ row.name | replace(' ', '-') }}-{{ row.sku | upper }}.mp4\"",
        '"renders/{{ row.tagline }}/{{ row.sku }}.mp4"',
    ],
)
def test_output_paths_using_all_of_the_key_are_accepted(tmp_path: Path, path: str) -> None:
    ws = workspace(tmp_path, "sku,name,tagline\nMug-01,Blue Mug,coffee\nmug-02,Red Mug,coffee\n",
                   project=PROJECT.replace('"renders/{{ row.sku }}.mp4"', path))  # fmt: skip
    done = ws.cli("validate", str(ws.project))
    assert done.returncode == 0, done.stderr


def test_a_transform_that_merges_two_keys_is_a_collision(tmp_path: Path) -> None:
    project = PROJECT.replace('"renders/{{ row.sku }}.mp4"', "\"renders/{{ row.sku | replace('-', '') }}.mp4\"")
    refused(
        workspace(tmp_path, "sku,name,tagline\nmug-01,a,b\nmug01,c,d\n", project=project),
        "project.yaml:15: output.path: renders/mug01.mp4 is the same file for 2 rows: 'mug-01' (data/products.csv:2), "
        "'mug01' (data/products.csv:3); every row's cut needs its own file, so output.path must use the row's key, "
        "e.g. renders/{{ row.sku }}.mp4",
    )


def test_no_row_output_may_overwrite_an_input_of_any_row(tmp_path: Path) -> None:
    """Row 'ref' would write its cut over the reference video every row reads."""
    from mediagen import make_clip

    mp4 = PROJECT.replace(
        '  - id: outro\n    prompt: "shot outro: {{ row.tagline }}"\n    image: images/mug-side.png\n',
        '  - id: outro\n    model: kling-video-o3-std/reference-to-video\n    prompt: "shot outro"\n'
        '    images: [images/mug.png]\n    video: "media/{{ row.tagline }}.mp4"\n',
    ).replace('"renders/{{ row.sku }}.mp4"', '"media/{{ row.sku }}.mp4"')
    ws = workspace(tmp_path, "sku,name,tagline\nmug-01,a,ref\nref,b,ref\n", mp4)
    (ws.root / "media").mkdir()
    make_clip(ws.root / "media" / "ref.mp4", duration=1.0)
    refused(
        ws,
        "project.yaml:17: output.path: media/ref.mp4: is the video of shot mug-01/outro "
        f"({ws.root / 'media' / 'ref.mp4'}); choose another path (row 'ref', data/products.csv:3)",
    )


@pytest.mark.parametrize("command", ["plan", "report"])
def test_no_file_kling_render_writes_may_land_on_the_table_or_a_row_cut(tmp_path: Path, command: str) -> None:
    ws = workspace(tmp_path)
    table = ws.root / "data" / "products.csv"
    for target, what in (
        (table, "the rows data file (rows.from)"),
        (ws.root / "renders" / "mug-02.mp4", "the final cut (output.path)"),
    ):
        done = ws.cli(command, str(ws.project), "--out", str(target))
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == f"error: --out {target}: is {what} ({target}); choose another path"
    assert table.read_text() == CSV and not (ws.root / "renders").exists()


def test_row_is_reserved_in_a_rows_project_only(tmp_path: Path) -> None:
    ws = workspace(tmp_path, project=PROJECT.replace("defaults:", "vars: {row: x}\ndefaults:"))
    refused(
        ws, "project.yaml:4: vars.row: 'row' is reserved for the row's values in a rows: project; rename the variable"
    )
    plain = small_workspace(tmp_path / "plain", base_env())
    plain.edit("vars: {product: ceramic mug}", "vars: {product: ceramic mug, row: 3}")
    assert plain.cli("validate", str(plain.project)).returncode == 0


def test_per_row_problems_name_the_row_and_shared_ones_are_said_once(tmp_path: Path) -> None:
    project = PROJECT.replace("    image: images/mug-side.png\n", '    image: "images/{{ row.tagline }}.png"\n')
    ws = workspace(tmp_path, "sku,name,tagline\nmug-01,a,mug-side\nmug-02,b,nope\nmug-03,c,gone\n", project)
    refused(
        ws,
        "project.yaml:14: shots[2].image: file not found: images/gone.png (row 'mug-03', data/products.csv:4)",
        "project.yaml:14: shots[2].image: file not found: images/nope.png (row 'mug-02', data/products.csv:3)",
    )
    broken = PROJECT.replace("{{ row.name }}", "{{ row.name | nosuchfilter }}")
    refused(
        workspace(tmp_path / "b", project=broken),
        "project.yaml:10: shots[1].prompt: template syntax error: No filter named 'nosuchfilter'.",
    )


@pytest.mark.parametrize("key", ["a", "A-1", "sku_01.v2", "x" * 64, "0"])
def test_good_keys(key: str) -> None:
    assert key_problem(key) is None


@pytest.mark.parametrize(
    "key", ["", "-a", "a-", "a.", ".a", "a/b", "a\\b", "x" * 65, "é", "a b", "con", "LPT1.x", "a\n"]
)
def test_bad_keys(key: str) -> None:
    assert key_problem(key) is not None


def test_render_refuses_before_paying(tmp_path: Path) -> None:
    ws = workspace(tmp_path, CSV + "mug-01,x,y\n")
    ws.in_process = False
    refused(ws, "data/products.csv:4: sku: duplicate key 'mug-01' (first on line 2)", command="render")
    done = subprocess.run(
        [sys.executable, "-m", "kling_render", "plan", str(ws.project), "--row", "mug-01"],
        capture_output=True,
        text=True,
        env=ws.env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "duplicate key" in done.stderr


def test_a_value_past_the_csv_modules_own_limit_names_its_line(tmp_path: Path) -> None:
    refused(
        workspace(tmp_path, CSV + 'mug-03,"' + "x" * 200_000 + '",y\n'),
        "data/products.csv:4: a value is over 131,072 characters (at most 100,000)",
    )


def test_records_of_empty_fields_below_the_data_are_skipped(tmp_path: Path) -> None:
    """Spreadsheets write ",," for formatted empty rows: no data, so no row (and no "empty key")."""
    ws = workspace(tmp_path, CSV + ",,\n,,\n\n,,\n")
    done = ws.cli("validate", str(ws.project), "--json")
    assert done.returncode == 0, done.stderr
    assert '"rows": 2' in done.stdout
    refused(workspace(tmp_path / "b", CSV + ",,x\n"), "data/products.csv:4: sku: empty key (every row needs one)")


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("{from: data/products.csv}", "rows: missing required key 'key'"),
        ('{from: data/products.csv, key: ""}', "rows.key: must not be empty"),
        ("{key: sku}", "rows: missing required key 'from'"),
        ("{from: data/products.csv, key: sku, by: x}", "rows.by: unknown key 'by' (allowed: from, key)"),
        ("[data/products.csv]", "rows: expected a mapping, got a list"),
    ],
)
def test_the_rows_mapping_is_checked_by_the_schema(tmp_path: Path, rows: str, expected: str) -> None:
    project = PROJECT.replace("rows: {from: data/products.csv, key: sku}", f"rows: {rows}")
    refused(workspace(tmp_path, project=project), f"project.yaml:3: {expected}")


def test_music_and_a_snippet_see_the_row(tmp_path: Path) -> None:
    """row.<column> in audio.music and in a prompts: snippet: each row's own file and text."""
    import shutil

    from e2e_cli import EXAMPLE

    project = (
        PROJECT.replace("defaults:", 'prompts: {tag: "for {{ row.name }}"}\ndefaults:')
        .replace('"shot intro: the studio"', '"shot intro: the studio {{ prompts.tag }}"')
        .replace("output:", 'audio: {music: "audio/{{ row.tagline }}.mp3"}\noutput:')
    )
    ws = workspace(tmp_path, project=project)
    (ws.root / "audio").mkdir()
    shutil.copy(EXAMPLE / "audio" / "bed.mp3", ws.root / "audio" / "coffee.mp3")
    refused(ws, "project.yaml:16: audio.music: file not found: audio/tea.mp3 (row 'mug-02', data/products.csv:3)")
    shutil.copy(EXAMPLE / "audio" / "bed.mp3", ws.root / "audio" / "tea.mp3")
    done = ws.cli("plan", str(ws.project), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["rows"]["clips"] == 6  # the intro names the row's product now: no shot is shared
    assert doc["rows"]["shared"]["cost_usd"] == 0
