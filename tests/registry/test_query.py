"""The registry query language: parsing, evaluation on a versions frame, the builder, rendering, errors."""

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible.registry.query import (
    KEYWORDS,
    And,
    Comparison,
    Field,
    InList,
    IsNull,
    Metric,
    Not,
    Or,
    OrderKey,
    Q,
    Query,
    QuerySyntaxError,
    Tag,
    parse_query,
)


def _at(day: str) -> pd.Timestamp:
    return pd.Timestamp(f"{day}T12:00:00", tz="UTC")


# model, version, stage, created_at, created_by, base_model, recipe_name, metrics, tags.
# Metrics and tags come as JSON strings (as stored), as Python objects, empty or missing.
_ROWS = [
    ("mathy", 1, "candidate", "2024-01-05", "alice", "tiny-gpt2", "sft_gsm8k",
     '{"gsm8k_accuracy": 0.31, "loss": 1.2}', '["math"]'),
    ("mathy", 2, "staging", "2024-02-10", "alice", "tiny-gpt2", "sft_gsm8k",
     '{"gsm8k_accuracy": 0.42, "loss": 0.9}', '["math", "sft"]'),
    ("mathy", 3, "production", "2024-03-15", "bob", "tiny-gpt2", "dpo_gsm8k",
     '{"gsm8k_accuracy": 0.47, "loss": 0.8}', '["math", "dpo"]'),
    ("mathy", 4, "archived", "2024-01-20", "bob", "tiny-gpt2", "sft_gsm8k", '{"gsm8k_accuracy": 0.12}', "[]"),
    ("coder", 1, "production", "2024-02-01", "carol", "tiny-llama", "sft_humaneval",
     '{"pass@1": 0.22, "humaneval": {"pass_at_10": 0.4}}', '["code"]'),
    ("coder", 2, "candidate", "2024-04-01", "carol", "tiny-llama", "rl_humaneval", '{"pass@1": 0.31}',
     ["code", "rl"]),
    ("coder", 3, "staging", "2024-04-02", "alice", None, "rl_humaneval", "{}", None),
    ("chat", 1, "production", "2024-01-01", "dave", "tiny-gpt2", "sft_norobots",
     {"gsm8k_accuracy": 0.05, "win_rate": 0.5}, ["chat"]),
    ("chat", 2, "candidate", "2024-03-01", "dave", "tiny-gpt2", "dpo_norobots",
     '{"win_rate": 0.61, "gsm8k_accuracy": 0.4}', '["chat", "math"]'),
    ("chat", 3, "candidate", "2024-03-01", "eve", None, "dpo_norobots", None, '["chat"]'),
    ("distill", 1, "staging", "2024-05-05", "eve", "mathy", "distill_mathy",
     '{"gsm8k_accuracy": 0.4, "loss": 1.0}', '["math", "distilled"]'),
    ("distill", 2, "production", "2024-05-06", "eve", "mathy", "distill_mathy",
     '{"gsm8k_accuracy": 0.45}', '["math", "distilled"]'),
]
COLUMNS = ["model", "version", "stage", "created_at", "created_by", "base_model", "recipe_name", "metrics", "tags"]


@pytest.fixture
def versions() -> pd.DataFrame:
    frame = pd.DataFrame([list(row) for row in _ROWS], columns=COLUMNS)
    frame["created_at"] = [_at(day) for day in frame["created_at"]]
    # A non-default index: results keep the labels of the rows they come from.
    frame.index = [f"row{i}" for i in range(len(frame))]
    return frame


def ids(frame: pd.DataFrame) -> list[str]:
    return [f"{model}:v{version}" for model, version in zip(frame["model"], frame["version"], strict=True)]


PRODUCTION = {"mathy:v3", "coder:v1", "chat:v1", "distill:v2"}


@pytest.mark.parametrize(("text", "expected"), [
    ('stage = "production"', PRODUCTION),
    ("stage = 'production'", PRODUCTION),
    ('stage == "production"', PRODUCTION),
    # and binds tighter than or
    ('stage = "production" or stage = "staging" and created_by = "alice"',
     PRODUCTION | {"mathy:v2", "coder:v3"}),
    ('(stage = "production" or stage = "staging") and created_by = "alice"', {"mathy:v2", "coder:v3"}),
    # not binds tighter than and
    ('not stage = "production" and model = "mathy"', {"mathy:v1", "mathy:v2", "mathy:v4"}),
    ('not (stage = "production" and model = "mathy")', {f"{m}:v{v}" for m, v, *_ in _ROWS} - {"mathy:v3"}),
    ('not not stage = "production"', PRODUCTION),
    ('stage in ("staging", "archived")', {"mathy:v2", "mathy:v4", "coder:v3", "distill:v1"}),
    ('stage not in ("candidate", "production")', {"mathy:v2", "mathy:v4", "coder:v3", "distill:v1"}),
    ("version in (3, 4)", {"mathy:v3", "mathy:v4", "coder:v3", "chat:v3"}),
    ('version >= "3"', {"mathy:v3", "mathy:v4", "coder:v3", "chat:v3"}),  # a numeric string is a number
    ("version != 1 and version < 3", {"mathy:v2", "coder:v2", "chat:v2", "distill:v2"}),
    # metrics: a version lacking the metric never matches a comparison, not even != or under not
    ("metrics.gsm8k_accuracy >= 0.4", {"mathy:v2", "mathy:v3", "chat:v2", "distill:v1", "distill:v2"}),
    ("metrics.gsm8k_accuracy < 0.4", {"mathy:v1", "mathy:v4", "chat:v1"}),
    ("not metrics.gsm8k_accuracy >= 0.4", {"mathy:v1", "mathy:v4", "chat:v1"}),
    ("metrics.gsm8k_accuracy != 0.4", {"mathy:v1", "mathy:v2", "mathy:v3", "mathy:v4", "chat:v1", "distill:v2"}),
    ("metrics.gsm8k_accuracy in (0.4, 0.12)", {"mathy:v4", "chat:v2", "distill:v1"}),
    ("metrics.gsm8k_accuracy is null", {"coder:v1", "coder:v2", "coder:v3", "chat:v3"}),
    ("not metrics.gsm8k_accuracy >= 0.4 or metrics.gsm8k_accuracy is null",
     {"mathy:v1", "mathy:v4", "chat:v1", "coder:v1", "coder:v2", "coder:v3", "chat:v3"}),
    ("metrics.win_rate is not null", {"chat:v1", "chat:v2"}),  # one from a dict, one from JSON
    ('metrics."pass@1" > 0.25', {"coder:v2"}),
    ("metrics.humaneval.pass_at_10 = 0.4", {"coder:v1"}),  # nested metrics by a dotted name
    # tags: JSON strings, lists, [] and None (no tags) alike
    ('tag = "math"', {"mathy:v1", "mathy:v2", "mathy:v3", "chat:v2", "distill:v1", "distill:v2"}),
    ('tag != "math"', {"mathy:v4", "coder:v1", "coder:v2", "coder:v3", "chat:v1", "chat:v3"}),
    ('tag in ("rl", "dpo")', {"mathy:v3", "coder:v2"}),
    ('tag not in ("math", "chat")', {"mathy:v4", "coder:v1", "coder:v2", "coder:v3"}),
    ('tag = "math" and tag = "chat"', {"chat:v2"}),
    # nulls in fields: unknown, like a missing metric
    ("base_model is null", {"coder:v3", "chat:v3"}),
    ('base_model != "tiny-gpt2"', {"coder:v1", "coder:v2", "distill:v1", "distill:v2"}),
    # timestamps against ISO strings, read as UTC unless they say otherwise
    ('created_at >= "2024-04-01"', {"coder:v2", "coder:v3", "distill:v1", "distill:v2"}),
    ('created_at < "2024-01-05T12:00:00+02:00"', {"chat:v1"}),
    ('created_at <= "2024-01-05T12:00:00Z"', {"chat:v1", "mathy:v1"}),
    ('created_at = "2024-03-01T12:00:00"', {"chat:v2", "chat:v3"}),
    ("", {f"{m}:v{v}" for m, v, *_ in _ROWS}),
])
def test_filters_select_the_expected_versions(versions, text, expected):
    result = parse_query(text).apply(versions)
    assert set(ids(result)) == expected
    # Rows keep their original labels and columns, in frame order when no order is asked for.
    assert list(result.columns) == COLUMNS
    assert list(result.index) == sorted(result.index, key=lambda label: int(label[3:]))


def test_keywords_are_case_insensitive(versions):
    upper = parse_query('stage = "production" AND NOT tag = "math" Order By version DESC LIMIT 10')
    lower = parse_query('stage = "production" and not tag = "math" order by version desc limit 10')
    assert upper == lower
    assert ids(upper.apply(versions)) == ["coder:v1", "chat:v1"]  # a tie on version keeps frame order


def test_order_by_several_keys_with_directions(versions):
    assert ids(parse_query('model = "chat" order by created_at desc, version').apply(versions)) == \
        ["chat:v2", "chat:v3", "chat:v1"]
    assert ids(parse_query('model = "chat" order by created_at desc, version desc').apply(versions)) == \
        ["chat:v3", "chat:v2", "chat:v1"]
    assert ids(parse_query("order by model asc, version desc limit 4").apply(versions)) == \
        ["chat:v3", "chat:v2", "chat:v1", "coder:v3"]


def test_order_is_stable_and_puts_missing_metrics_last(versions):
    by_stage = parse_query("order by stage").apply(versions)
    expected = sorted(ids(versions), key=lambda key: dict(zip(ids(versions), versions["stage"], strict=True))[key])
    assert ids(by_stage) == expected  # Python's sorted is stable: ties keep frame order
    by_accuracy = parse_query("order by metrics.gsm8k_accuracy desc").apply(versions)
    assert ids(by_accuracy) == [
        "mathy:v3", "distill:v2", "mathy:v2", "chat:v2", "distill:v1",  # 0.4 tie in frame order
        "mathy:v1", "mathy:v4", "chat:v1",
        "coder:v1", "coder:v2", "coder:v3", "chat:v3",  # no gsm8k_accuracy: last, in frame order
    ]
    assert ids(parse_query("order by metrics.gsm8k_accuracy").apply(versions))[:2] == ["chat:v1", "mathy:v4"]


def test_limit(versions):
    text = ('stage = "production" and metrics.gsm8k_accuracy >= 0.4 and tag = "math" '
            "order by created_at desc limit 5")
    assert ids(parse_query(text).apply(versions)) == ["distill:v2", "mathy:v3"]
    assert ids(parse_query(text.replace("limit 5", "limit 1")).apply(versions)) == ["distill:v2"]
    assert parse_query(text.replace("limit 5", "limit 0")).apply(versions).empty
    assert ids(parse_query("limit 3").apply(versions)) == ["mathy:v1", "mathy:v2", "mathy:v3"]


def test_string_escapes_and_numbers_parse_to_their_values():
    where = parse_query(r"""a = 'it\'s' and b = "tab\t\"q\" \u00e9\\" and c = -2.5e3 and d = true""").where
    assert where == And(And(And(
        Comparison(Field("a"), "=", "it's"), Comparison(Field("b"), "=", 'tab\t"q" \u00e9\\')),
        Comparison(Field("c"), "=", -2500.0)), Comparison(Field("d"), "=", True))
    assert isinstance(parse_query("a = 3").where.value, int)
    assert isinstance(parse_query("a = 3.0").where.value, float)


def test_an_empty_or_missing_column_is_handled(versions):
    assert parse_query('tag = "math" order by metrics.loss').apply(versions.iloc[:0]).empty
    with pytest.raises(QuerySyntaxError, match="tag needs a 'tags' column") as error:
        parse_query('stage = "production" and tag = "math"').apply(versions.drop(columns=["tags"]))
    assert error.value.column == 26


def test_bad_stored_metrics_name_the_row(versions):
    versions.loc["row2", "metrics"] = "{not json"
    with pytest.raises(ValueError, match=r"version row 2 \(mathy v3\): metrics is not a JSON object"):
        parse_query("metrics.loss < 1").apply(versions)


# ---------------------------------------------------------------------------------------------------
# The builder gives the same AST and the same rows.


@pytest.mark.parametrize(("built", "text"), [
    ((Q.field("stage") == "production") & (Q.metric("gsm8k_accuracy") >= 0.4) & Q.tag("math"),
     'stage = "production" and metrics.gsm8k_accuracy >= 0.4 and tag = "math"'),
    ((Q.field("stage") == "production") | (Q.field("stage") == "staging") & (Q.field("created_by") == "alice"),
     'stage = "production" or stage = "staging" and created_by = "alice"'),
    (~((Q.field("stage") == "production") & (Q.field("model") == "mathy")),
     'not (stage = "production" and model = "mathy")'),
    (Q.field("stage").isin(["staging", "archived"]), 'stage in ("staging", "archived")'),
    (Q.field("stage").notin(("candidate", "production")), 'stage not in ("candidate", "production")'),
    (Q.tags() != "math", 'tag != "math"'),
    (Q.tag_in("rl", "dpo"), 'tag in ("rl", "dpo")'),
    (Q.tags().notin(["math", "chat"]), 'tag not in ("math", "chat")'),
    (Q.metric("gsm8k_accuracy").is_null() | (Q.metric("pass@1") > 0.25),
     'metrics.gsm8k_accuracy is null or metrics."pass@1" > 0.25'),
    (Q.field("base_model").is_not_null() & (Q.field("created_at") < "2024-02-01"),
     'base_model is not null and created_at < "2024-02-01"'),
    (Q.field("version") <= 2, "version <= 2"),
])
def test_builder_and_text_give_equal_asts_and_rows(versions, built, text):
    parsed = parse_query(text)
    assert built == parsed.where
    assert ids(built.apply(versions)) == ids(parsed.apply(versions))


def test_builder_order_and_limit(versions):
    built = ((Q.field("stage") == "production") & (Q.metric("gsm8k_accuracy") >= 0.4) & Q.tag("math")) \
        .order_by("created_at", desc=True).limit(5)
    text = ('stage = "production" and metrics.gsm8k_accuracy >= 0.4 and tag = "math" '
            "order by created_at desc limit 5")
    assert built == parse_query(text)
    assert ids(built.apply(versions)) == ["distill:v2", "mathy:v3"]
    everything = Q.all().order_by("model").order_by(Q.metric("loss"), desc=True).order_by("metrics.win_rate")
    assert everything.limit(2) == parse_query("order by model, metrics.loss desc, metrics.win_rate limit 2")
    assert Q.all().filter(Q.tag("math")).filter(Q.field("version") > 2) == \
        parse_query('tag = "math" and version > 2')


def test_builder_rejects_what_the_grammar_cannot_say():
    with pytest.raises(ValueError, match="is a query keyword"):
        Q.field("limit")
    with pytest.raises(ValueError, match="not an identifier"):
        Q.field("created-at")
    with pytest.raises(ValueError, match="'tags' is a list"):
        Q.field("tags")
    with pytest.raises(TypeError, match="metrics.acc is a number"):
        _ = Q.metric("acc") >= "high"
    with pytest.raises(TypeError, match="tags support only = and !="):
        _ = Q.tags() < "x"
    with pytest.raises(TypeError, match="is_null"):
        _ = Q.field("stage") == None  # noqa: E711 - the builder, not a Python comparison
    with pytest.raises(ValueError, match="not a finite number"):
        _ = Q.metric("acc") > float("nan")
    with pytest.raises(ValueError, match="non-negative integer"):
        Q.all().limit(-1)
    with pytest.raises(TypeError, match="expects a query condition"):
        (Q.field("a") == 1) & True


# ---------------------------------------------------------------------------------------------------
# Rendering: str() is the canonical text, and it parses back to the same AST.


@pytest.mark.parametrize(("text", "canonical"), [
    ("stage='production'  AND  metrics.acc>=0.4", 'stage = "production" and metrics.acc >= 0.4'),
    ("(a = 1 and b = 2) and c = 3", "a = 1 and b = 2 and c = 3"),
    ("a = 1 and (b = 2 and c = 3)", "a = 1 and (b = 2 and c = 3)"),
    ("(a = 1 or b = 2) and not (c = 3 or d = 4)", "(a = 1 or b = 2) and not (c = 3 or d = 4)"),
    ("a = 1 or (b = 2 and c = 3)", "a = 1 or b = 2 and c = 3"),
    ("not (not a = 1)", "not not a = 1"),
    ("tag IN ('x','y') order by created_at ASC, metrics.\"pass@1\" DESC limit 0",
     'tag in ("x", "y") order by created_at, metrics."pass@1" desc limit 0'),
    ('a = "line\nbreak\x01"', r'a = "line\nbreak\u0001"'),
    ("a is not null", "a is not null"),
    ("a = 1e-5 or a = 2.", "a = 1e-05 or a = 2.0"),
])
def test_rendering_is_canonical_and_round_trips(text, canonical):
    query = parse_query(text)
    assert str(query) == canonical
    assert parse_query(canonical) == query
    assert repr(parse_query(canonical)) == repr(query)


# ---------------------------------------------------------------------------------------------------
# Errors point at the offending token.


def _caret_of(error: QuerySyntaxError) -> tuple[int, int]:
    caret_line = str(error).splitlines()[-1]
    stripped = caret_line.lstrip(" ")
    assert set(stripped) == {"^"}, str(error)
    return len(caret_line) - len(stripped) + 1, len(stripped)


@pytest.mark.parametrize(("text", "message", "column", "width"), [
    ('stage = "production" and metrics.acc >= and tag = "x"', "expected a value after '>=', got 'and'", 41, 3),
    ("stage = ", "expected a value after '=', got the end of the query", 9, 1),
    ('stage = "production', 'unterminated string: no closing "', 9, 11),
    ("stage = 'x\\", "unterminated string: no closing '", 9, 3),
    (r'a = "\q"', r"unknown escape '\q'", 6, 2),
    ('(stage = "x" or version = 1', "unbalanced parentheses: this '(' is never closed", 1, 1),
    ('stage = "x")', "unbalanced parentheses: ')' has no matching '('", 12, 1),
    ('(stage = "x" version = 1)', "expected ')' to close the '(' at column 1, got 'version'", 14, 7),
    ("version in (1, 2", "unbalanced parentheses: this '(' is never closed", 12, 1),
    ('stage = "x" model = "y"', "unexpected 'model'; expected 'and', 'or', 'order by', 'limit'", 13, 5),
    ("stage = 1 order by version limit 2 3", "unexpected '3'", 36, 1),
    ("limit -1", "limit must be a non-negative integer, got -1", 7, 2),
    ("limit 2.5", "limit must be a non-negative integer, got 2.5", 7, 3),
    ('limit "5"', 'limit must be a non-negative integer, got "5"', 7, 3),
    ("stage = 1 limit", "expected a row count after 'limit'", 16, 1),
    ("order by", "expected a field or metrics.<name> after 'order by'", 9, 1),
    ("order by limit 3", "expected a field or metrics.<name> after 'order by'", 10, 5),
    ("order by version,", "expected a field or metrics.<name> after ','", 18, 1),
    ("order version", "expected 'by' after 'order', got 'version'", 7, 7),
    ("order by tag", "cannot order by tag", 10, 3),
    ('metrics.acc > "high"', "metrics.acc is a number; expected a number after '>', got \"high\"", 15, 6),
    ("metrics = 1", "expected '.' and a metric name after 'metrics'", 1, 7),
    ("tag = 1", "tags are strings", 7, 1),
    ('tag < "x"', "tags are a set", 5, 1),
    ("tag is null", "tags are never null", 8, 4),
    ('tags = "x"', "'tags' is a list", 1, 4),
    ("stage = null", "use 'is null'", 9, 4),
    ("stage is nothing", "expected 'null' after 'is', got 'nothing'", 10, 7),
    ('stage ~ "x"', "unexpected character '~'", 7, 1),
    ("stage", "expected a comparison (= != < <= > >=), 'in', 'not in' or 'is' after stage", 6, 1),
    ("and = 1", "got the keyword 'and'", 1, 3),
    ("version in ()", "expected at least one value in 'in (...)'", 13, 1),
    ("version not in 1", "expected '(' after 'not in', got '1'", 16, 1),
    ("version = 1e999", "number 1e999 is out of range", 11, 5),
    ("not " * 70 + "a = 1", "nested more than 64 levels deep", 257, 3),
])
def test_syntax_errors_name_the_problem_and_point_at_it(text, message, column, width):
    with pytest.raises(QuerySyntaxError) as raised:
        parse_query(text)
    error = raised.value
    assert message in error.reason
    assert error.column == column
    assert str(error).splitlines()[0] == f"{error.reason} at column {column}:"
    assert str(error).splitlines()[1] == text
    assert _caret_of(error) == (column, width)


def test_the_error_of_the_brief_renders_as_three_lines():
    text = 'stage = "production" and metrics.acc >= and tag = "x"'
    with pytest.raises(QuerySyntaxError) as raised:
        parse_query(text)
    assert str(raised.value) == (
        "expected a value after '>=', got 'and' at column 41:\n"
        f"{text}\n"
        + " " * 40 + "^^^")


def test_errors_in_multi_line_queries_give_the_line():
    with pytest.raises(QuerySyntaxError) as raised:
        parse_query('stage = "production"\n  and version >\n  order by version')
    assert raised.value.line == 3 and raised.value.column == 3
    assert str(raised.value).splitlines() == [
        "expected a value after '>', got 'order' at line 3, column 3:", "  order by version", "  ^^^^^"]


def test_unknown_field_lists_known_fields_and_suggests_the_closest(versions):
    with pytest.raises(QuerySyntaxError) as raised:
        parse_query('stage = "production" and creatd_by = "eve"').apply(versions)
    error = raised.value
    assert "unknown field 'creatd_by'; did you mean 'created_by'?" in error.reason
    assert ("known fields: base_model, created_at, created_by, metrics, model, recipe_name, stage, tags, "
            "version (and metrics.<name>, tag)") in error.reason
    assert (error.column, _caret_of(error)) == (26, (26, 9))
    # The same check at parse time, when the caller knows the fields.
    with pytest.raises(QuerySyntaxError, match="did you mean 'created_at'") as raised:
        parse_query("version > 1 order by crated_at", fields=versions.columns)
    assert raised.value.column == 22
    assert parse_query("version > 1 order by created_at", fields=versions.columns).apply(versions).shape[0] == 8
    with pytest.raises(QuerySyntaxError, match="unknown field 'Stage'; did you mean 'stage'"):
        parse_query('Stage = "x"', fields=versions.columns)


@pytest.mark.parametrize(("text", "message", "column", "width"), [
    ('version > "abc"', 'type mismatch: version is a number and "abc" is not a number', 11, 5),
    ("version in (1, 'two')", 'type mismatch: version is a number and "two" is not a number', 16, 5),
    ('created_at > "yesterday"', 'type mismatch: created_at is a timestamp and "yesterday" is not an ISO', 14, 11),
    ("created_at > 5", "type mismatch: created_at is a timestamp; compare it with an ISO date/time", 14, 1),
    ("version = true", "type mismatch: version is a number, not true", 11, 4),
])
def test_type_mismatches_are_reported_at_apply_time_with_the_field(versions, text, message, column, width):
    query = parse_query(text)
    with pytest.raises(QuerySyntaxError) as raised:
        query.apply(versions)
    assert message in raised.value.reason
    assert _caret_of(raised.value) == (column, width)


def test_a_built_query_names_the_field_without_a_caret(versions):
    with pytest.raises(QuerySyntaxError) as raised:
        (Q.field("version") > "abc").apply(versions)
    assert str(raised.value) == 'type mismatch: version is a number and "abc" is not a number'
    assert raised.value.column is None


# ---------------------------------------------------------------------------------------------------
# Properties.

_field_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True).filter(
    lambda name: name.lower() not in KEYWORDS and name != "tags")
_numbers = st.one_of(st.integers(-(10**30), 10**30), st.floats(allow_nan=False, allow_infinity=False))
_literals = st.one_of(st.text(max_size=8), _numbers, st.booleans())
_ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
_metrics = st.builds(Metric, st.one_of(st.text(min_size=1, max_size=8), st.from_regex(r"[a-z]\w*(\.[a-z]\w*)?",
                                                                                     fullmatch=True)))
_fields = st.builds(Field, _field_names)
_leaves = st.one_of(
    st.builds(Comparison, _fields, _ops, _literals),
    st.builds(Comparison, _metrics, _ops, _numbers),
    st.builds(Comparison, st.just(Tag()), st.sampled_from(["=", "!="]), st.text(max_size=8)),
    st.builds(InList, _fields, st.lists(_literals, min_size=1, max_size=3).map(tuple), st.booleans()),
    st.builds(InList, _metrics, st.lists(_numbers, min_size=1, max_size=3).map(tuple), st.booleans()),
    st.builds(InList, st.just(Tag()), st.lists(st.text(max_size=5), min_size=1, max_size=3).map(tuple),
              st.booleans()),
    st.builds(IsNull, st.one_of(_fields, _metrics), st.booleans()),
)
_exprs = st.recursive(_leaves, lambda inner: st.one_of(
    st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)), max_leaves=8)
_queries = st.builds(
    Query, st.none() | _exprs,
    st.lists(st.builds(OrderKey, st.one_of(_fields, _metrics), st.booleans()), max_size=3).map(tuple),
    st.none() | st.integers(0, 10**6))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_queries)
def test_random_asts_render_and_parse_back_to_themselves(query):
    text = str(query)
    parsed = parse_query(text)
    assert parsed == query
    assert repr(parsed) == repr(query)  # also tells 1 from true and 1 from 1.0
    assert str(parsed) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_raises_only_query_syntax_errors(text):
    try:
        parse_query(text)
    except QuerySyntaxError as error:
        assert error.column is not None and "^" in str(error)


_vocabulary = [
    "stage", "version", "created_at", "base_model", "model", "nope", "tags", "tag", "metrics", ".", "gsm8k_accuracy",
    '"pass@1"', "and", "or", "not", "in", "is", "null", "true", "false", "order", "by", "asc", "desc", "limit",
    "(", ")", ",", "=", "!=", "<", "<=", ">", ">=", '"production"', "'math'", '"2024-03-01"', '"abc"', "3", "-1",
    "0.4", "1e999", '"', "\\", "#",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_vocabulary), max_size=14), st.sampled_from(["", " ", "\n"]))
def test_token_soup_parses_or_fails_cleanly_and_applies_or_fails_cleanly(words, glue):
    frame = pd.DataFrame([list(row) for row in _ROWS], columns=COLUMNS)
    frame["created_at"] = [_at(day) for day in frame["created_at"]]
    text = glue.join(words)
    try:
        query = parse_query(text)
    except QuerySyntaxError:
        return
    assert parse_query(str(query)) == query
    try:
        result = query.apply(frame)
    except QuerySyntaxError:
        return
    assert set(result.index) <= set(frame.index)
