"""``mapping.properties.json``: columns holding a JSON object per cell (Amplitude's and
PostHog's ``event_properties``) are sent as their keys: prefixed, nested objects flattened,
lists as JSON text, nulls omitted, typed once per file from every cell."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_import import run_import
from flywheel_import.errors import ConfigError
from flywheel_import.jsonprops import JsonShape, _walked, objects, shape_of
from flywheel_import.sandbox import Sandbox
from tests.foundation_helpers import run
from tests.test_identity_property import read_back

MAPPING: dict[str, Any] = {
    "event": "event",
    "user_id": "user_id",
    "timestamp": "ts",
    "properties": {"json": {"ep": ""}},
}


def table(*cells: str | None, extra: str = "") -> str:
    """A CSV whose column ``ep`` holds ``cells`` (None: an empty cell)."""
    head = "event,user_id,ts" + (f",{extra}" if extra else "") + ",ep\n"
    lines = []
    for i, cell in enumerate(cells):
        quoted = "" if cell is None else '"' + cell.replace('"', '""') + '"'
        lines.append(
            f"e,u{i},2024-01-01 10:00:{i % 60:02d}" + (",x" if extra else "") + f",{quoted}\n"
        )
    return head + "".join(lines)


def props(
    tmp_path: Path, *cells: str | None, mapping: dict[str, Any] | None = None, **kw: Any
) -> list[dict[str, Any]]:
    result = run(tmp_path, table(*cells), mapping or MAPPING, **kw)
    assert result.codes() == [], result.rejects
    return result.props()


def test_keys_become_properties_with_their_json_types(tmp_path: Path) -> None:
    got = props(
        tmp_path,
        '{"plan": "pro", "seats": 3, "price": 9.5, "trial": false}',
        '{"plan": "free", "seats": 1, "price": 0, "trial": true}',
    )
    assert got == [
        {"plan": "pro", "price": 9.5, "seats": 3, "trial": False},
        {"plan": "free", "price": 0.0, "seats": 1, "trial": True},
    ]


def test_nested_objects_flatten_to_parent_child_and_lists_are_json_text(tmp_path: Path) -> None:
    got = props(
        tmp_path,
        '{"device": {"os": {"name": "iOS", "v": 17}}, "tags": ["a", 1]}',
        '{"device": {"os": {"name": "Android"}}, "tags": []}',
    )
    assert got == [
        {"device.os.name": "iOS", "device.os.v": 17, "tags": '["a",1]'},
        {"device.os.name": "Android", "tags": "[]"},
    ]


def test_nulls_and_empty_cells_and_empty_objects_give_no_keys(tmp_path: Path) -> None:
    got = props(tmp_path, '{"a": null, "b": 1}', None, "{}", '{"a": null, "c": {}}')
    assert got == [{"b": 1}, {}, {}, {}]


def test_the_column_itself_is_not_also_sent_and_keys_follow_the_columns_sorted(
    tmp_path: Path,
) -> None:
    result = run(
        tmp_path, table('{"zeta": 1, "alpha": 2, "mid": {"b": 1, "a": 2}}', extra="plan"), MAPPING
    )
    body = result.raw_bodies[0]
    assert '"properties":{"plan":"x","alpha":2,"mid.a":2,"mid.b":1,"zeta":1}' in body
    assert '"ep"' not in body


def test_a_prefix_is_put_before_every_key(tmp_path: Path) -> None:
    mapping = {**MAPPING, "properties": {"json": {"ep": "user."}}}
    assert props(tmp_path, '{"plan": "pro", "geo": {"city": "Paris"}}', mapping=mapping) == [
        {"user.plan": "pro", "user.geo.city": "Paris"}
    ]


@pytest.mark.parametrize(
    "cell", ["not json", '{"a": 1', "[1, 2]", "5", '"text"', "null", '{"a": 1} trailing', "true"]
)
def test_a_cell_that_is_not_a_json_object_is_an_invalid_property_naming_the_column(
    tmp_path: Path, cell: str
) -> None:
    result = run(tmp_path, table('{"a": 1}', cell), MAPPING)
    assert result.props() == [{"a": 1}]
    reject = result.reject_at(2)
    assert reject["_error_code"] == "INVALID_PROPERTY"
    assert reject["_error_message"].startswith("invalid property ep: is not a JSON object: ")
    assert reject["ep"] == cell  # the rejects file keeps the cell as read


def test_a_number_in_one_row_and_text_in_another_is_text_in_every_row(tmp_path: Path) -> None:
    got = props(
        tmp_path,
        '{"zip": 2134, "n": 1, "flag": true, "mix": 1.5}',
        '{"zip": "02134", "n": 2.5, "flag": 1, "mix": false}',
        '{"mix": "x"}',
    )
    assert got == [
        {"zip": "2134", "n": 1.0, "flag": "true", "mix": "1.5"},
        {"zip": "02134", "n": 2.5, "flag": "1", "mix": "false"},
        {"mix": "x"},
    ]


def test_a_key_sometimes_an_object_and_sometimes_not_is_sent_as_its_json_text(
    tmp_path: Path,
) -> None:
    got = props(
        tmp_path,
        '{"o": {"k": 1, "l": [true]}}',
        '{"o": 5}',
        '{"o": "s"}',
        '{"o": [1, {"x": null}]}',
    )
    assert got == [{"o": '{"k":1,"l":[true]}'}, {"o": "5"}, {"o": "s"}, {"o": '[1,{"x":null}]'}]


def test_types_are_decided_over_the_whole_file_not_per_batch(tmp_path: Path) -> None:
    cells = [f'{{"v": {i}}}' for i in range(30)] + ['{"v": "late text"}']
    for batch_rows in (1, 7, 1000):
        got = props(tmp_path / str(batch_rows), *cells, source={"batch_rows": batch_rows})
        assert got[0] == {"v": "0"} and got[-1] == {"v": "late text"}


def test_a_key_clashing_with_a_column_is_a_one_line_config_error_naming_both(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as info:
        run(tmp_path, table('{"plan": "pro"}', extra="plan"), MAPPING)
    message = str(info.value)
    assert "\n" not in message
    assert (
        "mapping.properties.json.ep: property 'plan' would come from both column 'plan' "
        "and key 'plan' of JSON column 'ep'"
    ) in message


def test_two_json_columns_sharing_keys_clash_unless_prefixed(tmp_path: Path) -> None:
    data = 'event,user_id,ts,ep,up\ne,u1,2024-01-01,"{""plan"": 1}","{""plan"": ""gold""}"\n'
    mapping = {**MAPPING, "properties": {"json": {"ep": "", "up": ""}}}
    with pytest.raises(
        ConfigError, match="key 'plan' of JSON column 'ep' and key 'plan' of JSON column 'up'"
    ):
        run(tmp_path / "a", data, mapping)
    mapping = {**MAPPING, "properties": {"json": {"ep": "", "up": "user."}}}
    assert run(tmp_path / "b", data, mapping).props() == [{"plan": 1, "user.plan": "gold"}]


def test_a_dotted_key_clashing_with_a_nested_one_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"property 'a\.b' would come from both nested key "
        r"'a' > 'b' of JSON column 'ep' and key 'a\.b'",
    ):
        run(tmp_path, table('{"a.b": 1}', '{"a": {"b": 2}}'), MAPPING)


def test_a_json_column_missing_from_the_file_is_a_config_error(tmp_path: Path) -> None:
    mapping = {**MAPPING, "properties": {"json": {"event_properties": ""}}}
    with pytest.raises(
        ConfigError,
        match=r"mapping\.properties\.json\.event_properties: "
        "column 'event_properties' not found",
    ):
        run(tmp_path, table('{"a": 1}'), mapping)


def test_a_parquet_column_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    frame = pl.DataFrame({"event": ["e"], "user_id": ["u"], "ts": ["2024-01-01"], "ep": [5]})
    with pytest.raises(ConfigError, match=r"column 'ep' of .* is Int64, not JSON text"):
        run(tmp_path, frame, MAPPING, name="data.parquet")


def test_parquet_and_ndjson_text_columns_are_read_like_csv(tmp_path: Path) -> None:
    cells = ['{"plan": "pro", "n": 1, "geo": {"c": "FR"}}', None, '{"n": 2.5, "l": [1]}']
    frame = pl.DataFrame(
        {
            "event": ["e"] * 3,
            "user_id": ["u1", "u2", "u3"],
            "ts": ["2024-01-01 10:00:00"] * 3,
            "ep": cells,
        }
    )
    expected = [{"plan": "pro", "n": 1.0, "geo.c": "FR"}, {}, {"n": 2.5, "l": "[1]"}]
    for name in ("data.parquet", "data.ndjson", "data.csv"):
        assert run(tmp_path / name, frame, MAPPING, name=name).props() == expected, name


def test_plain_gzip_and_tsv_and_batch_sizes_send_identical_bodies(tmp_path: Path) -> None:
    cells = [
        f'{{"a": {v}, "b": {{"c": [{i}]}}, "s": "x\\ty"}}'
        for i, v in enumerate(["1", "2.5", "true", '"t"', "null", "{}", "[]", "7"] * 5)
    ]
    text = table(*cells, None, "garbage")
    mapping = MAPPING
    (tmp_path / "p.csv").write_text(text)
    (tmp_path / "p.csv.gz").write_bytes(gzip.compress(text.encode()))
    tsv = "\n".join("\t".join(_cells(line)) for line in text.splitlines()) + "\n"
    (tmp_path / "p.tsv").write_text(tsv)
    reference = read_back(tmp_path / "p.csv", mapping, 1000, dry_run=False)
    assert len(reference.bodies) == len(cells) + 1 and len(reference.rejects) == 1
    for path, batch_rows in (
        (tmp_path / "p.csv", 1),
        (tmp_path / "p.csv.gz", 1000),
        (tmp_path / "p.csv.gz", 3),
        (tmp_path / "p.tsv", 1000),
    ):
        got = read_back(path, mapping, batch_rows, dry_run=False)
        assert got.bodies == reference.bodies, (path, batch_rows)
        assert got.ids == reference.ids and got.rejects == reference.rejects


def _cells(line: str) -> list[str]:
    import csv
    import io

    return next(csv.reader(io.StringIO(line)))


def test_dry_run_and_send_agree_on_json_rows(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text(table('{"a": 1}', "bad", None, '{"a": [1]}'))
    got = read_back(tmp_path / "d.csv", MAPPING, 2)
    assert got.dry_rows == got.rows == [1, 3, 4]
    assert got.dry_rejects == got.rejects == [(2, "INVALID_PROPERTY")]


# --- the typing of JSON keys: polars' reading and the walk agree ----------------------------

KEYS = st.sampled_from(["a", "b", "c.d", "é", "it's"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=4),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=6,
)
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=4)
CELLS = st.one_of(
    OBJECTS.map(lambda o: json.dumps(o, ensure_ascii=False)),
    st.sampled_from(["[1]", "5", "null", "nope", '"s"', "{}"]),
)


@settings(max_examples=300, deadline=None)
@given(cells=st.lists(CELLS, min_size=1, max_size=12), cut=st.integers(0, 12))
def test_polars_typing_agrees_with_reading_each_object_and_joins_across_parts(
    cells: list[str], cut: int
) -> None:
    series = pl.Series(cells, dtype=pl.String)
    walked = _walked(series.filter(objects(series)))
    whole = shape_of(series).properties()
    assert whole == walked.properties()
    parts = shape_of(series[:cut]).join(shape_of(series[cut:]))
    assert parts.properties() == whole


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cells=st.lists(st.one_of(st.none(), CELLS), min_size=1, max_size=15))
def test_random_json_cells_send_the_same_bodies_at_any_batch_size_plain_or_gzip(
    tmp_path_factory: pytest.TempPathFactory, cells: list[str | None]
) -> None:
    folder = tmp_path_factory.mktemp("jsoncells")
    text = table(*cells)
    (folder / "j.csv").write_text(text)
    (folder / "j.csv.gz").write_bytes(gzip.compress(text.encode()))
    reference = read_back(folder / "j.csv", MAPPING, 1000, dry_run=False)
    for path, batch_rows in (
        (folder / "j.csv", 1),
        (folder / "j.csv.gz", 1000),
        (folder / "j.csv.gz", 2),
    ):
        got = read_back(path, MAPPING, batch_rows, dry_run=False)
        assert got.bodies == reference.bodies, (path, batch_rows)
        assert got.rejects == reference.rejects
    for body in reference.bodies:  # every value is one the API takes
        values = json.loads(body)["event"]["properties"].values()
        assert all(isinstance(v, str | bool | int | float) for v in values)


def test_shape_kinds_follow_the_documented_rule() -> None:
    cells = pl.Series(
        [
            '{"i": 1, "f": 1, "b": true, "s": "x", "m": 1, "l": [1], "o": {"k": 1},'
            ' "x": {"k": 1}, "n": null}',
            '{"f": 2.5, "b": false, "m": true, "x": 3}',
        ]
    )
    assert shape_of(cells).properties() == {
        ("b",): "boolean",
        ("f",): "number",
        ("i",): "integer",
        ("l",): "json",
        ("m",): "text",
        ("o", "k"): "integer",
        ("s",): "text",
        ("x",): "json",
    }
    assert JsonShape().properties() == {}


# --- end to end -------------------------------------------------------------------------------

KEY = "json-props-key"


def test_an_amplitude_style_export_lands_in_the_sandbox_with_typed_keys(tmp_path: Path) -> None:
    rows = ["event_type\tuser_id\tevent_time\tevent_properties\tuser_properties"]
    for i in range(40):
        props = {
            "plan": ["free", "pro"][i % 2],
            "price": i + 0.5,
            "items": [i, i + 1],
            "device": {"os": "iOS", "v": i},
            "coupon": None if i % 3 else "X",
        }
        user = "\\N" if i % 4 == 0 else json.dumps({"tier": i % 5, "beta": i % 2 == 0})
        name = ["Viewed Page", "$pageview", "addToCart", "注册"][i % 4]
        rows.append(f"{name}\tu{i}\t2024-02-01 10:{i:02d}:00\t{json.dumps(props)}\t{user}")
    (tmp_path / "export.tsv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "import.yaml"
    config.write_text("""
source: {path: export.tsv, csv: {null_values: ["\\\\N"]}}
api: {rate_limit: 0}
mapping:
  event: {column: event_type, normalize: snake_case, names: {"$pageview": page_view}}
  user_id: user_id
  timestamp: event_time
  properties:
    json: {event_properties: "", user_properties: "user."}
output: {rejects: rejects.csv, report: report.json}
""")
    with Sandbox(key=KEY) as sb:
        report = run_import(config, api_url=sb.url, key=KEY)
        stored = {e["body"]["event"]["user_id"]: e["body"]["event"] for e in sb.events()}
    assert (report.accepted, report.rejected) == (30, 10)  # the "注册" rows have no valid name
    assert stored["u0"]["event"] == "viewed_page"
    assert stored["u1"]["event"] == "page_view"
    assert stored["u2"]["event"] == "add_to_cart"
    assert stored["u1"]["properties"] == {  # "coupon": null there: omitted
        "device.os": "iOS",
        "device.v": 1,
        "items": "[1,2]",
        "plan": "pro",
        "price": 1.5,
        "user.beta": False,
        "user.tier": 1,
    }
    assert stored["u0"]["properties"] == {  # user_properties is \\N there: no user keys
        "coupon": "X",
        "device.os": "iOS",
        "device.v": 0,
        "items": "[0,1]",
        "plan": "free",
        "price": 0.5,
    }
    saved = json.loads((tmp_path / "report.json").read_text())
    assert {(c["from"], c["to"]) for c in saved["event_names_changed"]["top"]} == {
        ("Viewed Page", "viewed_page"),
        ("$pageview", "page_view"),
        ("addToCart", "add_to_cart"),
    }
    assert saved["rejected_by_code"]["INVALID_EVENT_NAME"]["count"] == 10
