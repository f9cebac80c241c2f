"""The registry query language: a safely parsed filter/order/limit over a frame of model versions.

    stage = "production" and metrics.gsm8k_accuracy >= 0.4 and tag = "math" order by created_at desc limit 5

Text goes through a tokenizer (with positions) and a recursive-descent parser into an AST of frozen
dataclasses; nothing is ever evaluated as Python. The same AST can be built in Python with ``Q``:

    (Q.field("stage") == "production") & (Q.metric("gsm8k_accuracy") >= 0.4) & Q.tag("math")

Comparisons use SQL's three-valued logic: a null field or a missing metric is *unknown*, so it never
matches a comparison, and ``not`` of unknown is still unknown (test it with ``is null``). A version's
tags are a set: a version without tags simply contains none.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "And", "Comparison", "Field", "InList", "IsNull", "Metric", "Not", "Or", "OrderKey", "Q", "Query",
    "QuerySyntaxError", "Tag", "parse_query",
]

# Words with a meaning in the grammar (matched case-insensitively); they cannot name a field.
KEYWORDS = frozenset({
    "and", "or", "not", "in", "is", "null", "true", "false", "order", "by", "asc", "desc", "limit",
    "tag", "metrics",
})
COMPARISON_OPS = ("=", "!=", "<", "<=", ">", ">=")
# Deep enough for any query a person writes, shallow enough that Python's own recursion never runs out.
MAX_NESTING = 64
_MAX_NUMBER_CHARS = 100
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")

Span = tuple[int, int]  # [start, end) character offsets into the query text
Literal = str | int | float | bool


class QuerySyntaxError(ValueError):
    """A query that cannot be parsed or applied, with the offending token underlined."""

    def __init__(self, reason: str, text: str | None = None, span: Span | None = None):
        self.reason = reason
        self.text = text
        self.span = span
        self.line: int | None = None
        self.column: int | None = None  # 1-based, within ``line``
        if text is None or span is None:
            super().__init__(reason)
            return
        start, end = span
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        self.line = text.count("\n", 0, start) + 1
        self.column = start - line_start + 1
        width = max(1, min(end, line_end) - start)
        where = f"column {self.column}" if "\n" not in text else f"line {self.line}, column {self.column}"
        shown = text[line_start:line_end].replace("\t", " ")
        super().__init__(f"{reason} at {where}:\n{shown}\n{' ' * (self.column - 1)}{'^' * width}")


# ---------------------------------------------------------------------------------------------------
# The AST. Spans and source text are kept for error messages only and never take part in equality.


class Expr:
    """A boolean condition on a version; combine with ``&``, ``|`` and ``~``."""

    def __and__(self, other: Expr) -> And:
        return And(self, _expect_expr(other, "&"))

    def __or__(self, other: Expr) -> Or:
        return Or(self, _expect_expr(other, "|"))

    def __invert__(self) -> Not:
        return Not(self)

    def order_by(self, key: str | Field | Metric | _RefBuilder, desc: bool = False) -> Query:
        return Query(where=self).order_by(key, desc=desc)

    def limit(self, rows: int) -> Query:
        return Query(where=self).limit(rows)

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        return Query(where=self).apply(frame)

    def __str__(self) -> str:
        return _render_expr(self)


@dataclass(frozen=True)
class Field:
    """A column of the versions frame."""

    name: str
    span: Span | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Metric:
    """``metrics.<name>``: one entry of the ``metrics`` column (a JSON object string or a dict)."""

    name: str
    span: Span | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if _BARE_METRIC.fullmatch(self.name):
            return f"metrics.{self.name}"
        return f"metrics.{_render_literal(self.name)}"


@dataclass(frozen=True)
class Tag:
    """``tag``: the set of tags in the ``tags`` column (a JSON list string or a list)."""

    span: Span | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return "tag"


Ref = Field | Metric | Tag


@dataclass(frozen=True)
class Comparison(Expr):
    ref: Ref
    op: str
    value: Literal
    value_span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class InList(Expr):
    ref: Ref
    values: tuple[Literal, ...]
    negated: bool = False
    value_spans: tuple[Span, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class IsNull(Expr):
    ref: Field | Metric
    negated: bool = False


@dataclass(frozen=True)
class Not(Expr):
    operand: Expr


@dataclass(frozen=True)
class And(Expr):
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or(Expr):
    left: Expr
    right: Expr


@dataclass(frozen=True)
class OrderKey:
    ref: Field | Metric
    descending: bool = False

    def __str__(self) -> str:
        return f"{self.ref} desc" if self.descending else str(self.ref)


@dataclass(frozen=True)
class Query:
    """A filter, an ordering and a row limit; ``apply`` runs it on a versions frame."""

    where: Expr | None = None
    ordering: tuple[OrderKey, ...] = ()
    row_limit: int | None = None
    text: str | None = field(default=None, compare=False, repr=False)

    def filter(self, condition: Expr) -> Query:
        """This query with ``condition`` and-ed onto its filter."""
        condition = _expect_expr(condition, "filter")
        where = condition if self.where is None else And(self.where, condition)
        return dataclasses.replace(self, where=where)

    def order_by(self, key: str | Field | Metric | _RefBuilder, desc: bool = False) -> Query:
        """This query ordered additionally by ``key`` (a field name, ``"metrics.<name>"`` or a ref)."""
        return dataclasses.replace(self, ordering=(*self.ordering, OrderKey(_order_ref(key), bool(desc))))

    def limit(self, rows: int) -> Query:
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ValueError(f"limit must be a non-negative integer, got {rows!r}")
        return dataclasses.replace(self, row_limit=rows)

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` that match, in the query's order (stable), at most ``limit`` of them."""
        rows = _Rows(frame, self.text)
        positions = np.arange(len(frame))
        if self.where is not None:
            positions = positions[rows.evaluate(self.where).fillna(False).to_numpy(dtype=bool)]
        for key in reversed(self.ordering):
            # Sorting by the last key first, stably, yields the multi-key order.
            values = rows.order_values(key.ref).iloc[positions].reset_index(drop=True)
            try:
                order = values.sort_values(ascending=not key.descending, kind="stable", na_position="last")
            except TypeError as error:
                raise QuerySyntaxError(
                    f"cannot order by {key.ref}: its values are of types that do not compare ({error})",
                    self.text, key.ref.span) from None
            positions = positions[order.index.to_numpy()]
        if self.row_limit is not None:
            positions = positions[: self.row_limit]
        return frame.iloc[positions]

    def __str__(self) -> str:
        parts = []
        if self.where is not None:
            parts.append(_render_expr(self.where))
        if self.ordering:
            parts.append("order by " + ", ".join(str(key) for key in self.ordering))
        if self.row_limit is not None:
            parts.append(f"limit {self.row_limit}")
        return " ".join(parts)


# ---------------------------------------------------------------------------------------------------
# The Python builder.


class _RefBuilder:
    """A field, metric or the tags, waiting for a comparison (``==`` builds a condition, not a bool)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, ref: Ref):
        self.ref = ref

    def _compare(self, op: str, value: Any) -> Comparison:
        return Comparison(self.ref, op, _check_literal(self.ref, op, value))

    def __eq__(self, value: Any) -> Comparison:  # type: ignore[override]
        return self._compare("=", value)

    def __ne__(self, value: Any) -> Comparison:  # type: ignore[override]
        return self._compare("!=", value)

    def __lt__(self, value: Any) -> Comparison:
        return self._compare("<", value)

    def __le__(self, value: Any) -> Comparison:
        return self._compare("<=", value)

    def __gt__(self, value: Any) -> Comparison:
        return self._compare(">", value)

    def __ge__(self, value: Any) -> Comparison:
        return self._compare(">=", value)

    def isin(self, values: Iterable[Any]) -> InList:
        return InList(self.ref, _check_list(self.ref, values))

    def notin(self, values: Iterable[Any]) -> InList:
        return InList(self.ref, _check_list(self.ref, values), negated=True)

    def is_null(self) -> IsNull:
        return IsNull(_nullable_ref(self.ref))

    def is_not_null(self) -> IsNull:
        return IsNull(_nullable_ref(self.ref), negated=True)


class Q:
    """Builds the same AST as ``parse_query``: ``(Q.field("stage") == "production") & Q.tag("math")``."""

    @staticmethod
    def field(name: str) -> _RefBuilder:
        return _RefBuilder(Field(_check_field_name(name)))

    @staticmethod
    def metric(name: str) -> _RefBuilder:
        return _RefBuilder(Metric(_check_metric_name(name)))

    @staticmethod
    def tags() -> _RefBuilder:
        return _RefBuilder(Tag())

    @staticmethod
    def tag(value: str) -> Comparison:
        """True when the version's tags contain ``value`` (``tag = value``)."""
        return Q.tags() == value

    @staticmethod
    def tag_in(*values: str) -> InList:
        """True when the version's tags contain any of ``values`` (``tag in (...)``)."""
        return Q.tags().isin(values)

    @staticmethod
    def all() -> Query:
        """The query that keeps every version, to order or limit."""
        return Query()


def _expect_expr(value: Any, what: str) -> Expr:
    if not isinstance(value, Expr):
        raise TypeError(f"{what} expects a query condition (e.g. Q.field('stage') == 'production'), "
                        f"got {type(value).__name__}")
    return value


def _check_field_name(name: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"field name {name!r} is not an identifier (letters, digits and '_')")
    if name.lower() in KEYWORDS:
        raise ValueError(f"field name {name!r} is a query keyword; use Q.metric(...) or Q.tag(...) "
                         "for metrics and tags")
    if name == "tags":
        raise ValueError("'tags' is a list; use Q.tag(value) or Q.tag_in(...)")
    return name


def _check_metric_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric name must be a non-empty string, got {name!r}")
    return name


def _nullable_ref(ref: Ref) -> Field | Metric:
    if isinstance(ref, Tag):
        raise TypeError("tags are never null; test them with Q.tag(...) or Q.tags().notin(...)")
    return ref


def _check_literal(ref: Ref, op: str, value: Any) -> Literal:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if isinstance(ref, Tag):
        if op not in ("=", "!="):
            raise TypeError(f"tags support only = and != (and in lists), not {op}")
        if not isinstance(value, str):
            raise TypeError(f"tags are strings; got {value!r}")
        return value
    if value is None:
        raise TypeError("compare with None through .is_null() / .is_not_null()")
    if isinstance(ref, Metric) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"{ref} is a number; got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{ref}: {value!r} is not a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) > _MAX_NUMBER_CHARS:
        raise ValueError(f"{ref}: integer literal has more than {_MAX_NUMBER_CHARS} digits")
    if not isinstance(value, (str, int, float, bool)):
        raise TypeError(f"{ref}: literals are str, int, float or bool; got {type(value).__name__}")
    return value


def _check_list(ref: Ref, values: Iterable[Any]) -> tuple[Literal, ...]:
    if isinstance(values, str):
        raise TypeError(f"{ref}: isin expects a list of values, not the string {values!r}")
    checked = tuple(_check_literal(ref, "=", value) for value in values)
    if not checked:
        raise ValueError(f"{ref}: an in-list needs at least one value")
    return checked


def _order_ref(key: str | Field | Metric | _RefBuilder) -> Field | Metric:
    if isinstance(key, _RefBuilder):
        key = key.ref
    if isinstance(key, str):
        key = Metric(_check_metric_name(key[len("metrics."):])) if key.startswith("metrics.") \
            else Field(_check_field_name(key))
    if not isinstance(key, (Field, Metric)):
        raise TypeError(f"order_by expects a field name, 'metrics.<name>' or a field/metric ref, got {key!r}")
    return key


# ---------------------------------------------------------------------------------------------------
# Rendering back to the canonical text.


def _render_literal(value: Literal) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    out = ['"']
    for char in value:
        if char in _ESCAPES_OUT:
            out.append(_ESCAPES_OUT[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


_ESCAPES_OUT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _render_expr(expr: Expr) -> str:
    # Parentheses only where precedence (not > and > or) or left-associativity needs them.
    if isinstance(expr, Or):
        return f"{_render_expr(expr.left)} or {_wrap(expr.right, (Or,))}"
    if isinstance(expr, And):
        return f"{_wrap(expr.left, (Or,))} and {_wrap(expr.right, (Or, And))}"
    if isinstance(expr, Not):
        return f"not {_wrap(expr.operand, (Or, And))}"
    if isinstance(expr, Comparison):
        return f"{expr.ref} {expr.op} {_render_literal(expr.value)}"
    if isinstance(expr, InList):
        values = ", ".join(_render_literal(value) for value in expr.values)
        return f"{expr.ref} {'not in' if expr.negated else 'in'} ({values})"
    if isinstance(expr, IsNull):
        return f"{expr.ref} is {'not null' if expr.negated else 'null'}"
    raise TypeError(f"not a query condition: {expr!r}")


def _wrap(expr: Expr, lower: tuple[type, ...]) -> str:
    text = _render_expr(expr)
    return f"({text})" if isinstance(expr, lower) else text


# ---------------------------------------------------------------------------------------------------
# Tokenizer.


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "string", "number", "op", "end"
    text: str  # as written
    value: Any
    start: int
    end: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words

    def describe(self) -> str:
        return "the end of the query" if self.kind == "end" else repr(self.text)


_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATORS = ("!=", "<=", ">=", "==", "=", "<", ">", "(", ")", ",", ".")
_ESCAPES_IN = {'"': '"', "'": "'", "\\": "\\", "/": "/", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "\"'":
            token = _read_string(text, i)
            tokens.append(token)
            i = token.end
        elif number := _NUMBER.match(text, i):
            tokens.append(_number_token(text, number.start(), number.end()))
            i = number.end()
        elif word := _IDENTIFIER.match(text, i):
            tokens.append(_Token("word", word.group(), word.group(), i, word.end()))
            i = word.end()
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None:
                raise QuerySyntaxError(f"unexpected character {char!r}", text, (i, i + 1))
            tokens.append(_Token("op", op, "=" if op == "==" else op, i, i + len(op)))
            i += len(op)
    tokens.append(_Token("end", "", None, n, n + 1))
    return tokens


def _number_token(text: str, start: int, end: int) -> _Token:
    raw = text[start:end]
    if len(raw) > _MAX_NUMBER_CHARS:
        raise QuerySyntaxError(f"number literal longer than {_MAX_NUMBER_CHARS} characters", text, (start, end))
    value = _number_value(raw)
    if value is None:
        raise QuerySyntaxError(f"number {raw} is out of range", text, (start, end))
    return _Token("number", raw, value, start, end)


def _number_value(raw: str) -> int | float | None:
    """The int or finite float a number literal spells (None when it overflows to infinity)."""
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    value = float(raw)
    return value if math.isfinite(value) else None


def _read_string(text: str, start: int) -> _Token:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return _Token("string", text[start:i + 1], "".join(out), start, i + 1)
        if char != "\\":
            out.append(char)
            i += 1
            continue
        escape = text[i + 1:i + 2]
        if escape in _ESCAPES_IN:
            out.append(_ESCAPES_IN[escape])
            i += 2
        elif escape == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2:i + 6]):
            out.append(chr(int(text[i + 2:i + 6], 16)))
            i += 6
        elif escape == "":
            break
        else:
            raise QuerySyntaxError(
                f"unknown escape '\\{escape}' in string (use \\\\ \\\" \\' \\n \\t \\r or \\uXXXX)",
                text, (i, i + 2))
    raise QuerySyntaxError(f"unterminated string: no closing {quote}", text, (start, len(text)))


# ---------------------------------------------------------------------------------------------------
# Parser: query := [or_expr] [order by key {, key}] [limit N]


def parse_query(text: str, fields: Iterable[str] | None = None) -> Query:
    """Parse ``text`` into a Query; with ``fields``, an unknown field fails here rather than at apply."""
    if not isinstance(text, str):
        raise TypeError(f"parse_query expects a string, got {type(text).__name__}")
    query = _Parser(text).parse()
    if fields is not None:
        known = sorted(set(fields))
        for ref in _field_refs(query):
            if ref.name not in known:
                raise _unknown_field(ref, known, text)
    return query


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def fail(self, reason: str, token: _Token | None = None) -> QuerySyntaxError:
        token = token or self.token
        return QuerySyntaxError(reason, self.text, (token.start, token.end))

    def parse(self) -> Query:
        where = None
        if not (self.token.kind == "end" or self.token.is_word("order", "limit")):
            where = self.parse_or()
        ordering = self.parse_order_by() if self.token.is_word("order") else ()
        row_limit = self.parse_limit() if self.token.is_word("limit") else None
        if self.token.kind != "end":
            raise self.trailing()
        return Query(where, ordering, row_limit, text=self.text)

    def trailing(self) -> QuerySyntaxError:
        token = self.token
        if token.text == ")":
            return self.fail("unbalanced parentheses: ')' has no matching '('")
        return self.fail(f"unexpected {token.describe()}; expected 'and', 'or', 'order by', 'limit' "
                         "or the end of the query")

    def parse_or(self) -> Expr:
        expr = self.parse_and()
        while self.token.is_word("or"):
            self.advance()
            expr = Or(expr, self.parse_and())
        return expr

    def parse_and(self) -> Expr:
        expr = self.parse_not()
        while self.token.is_word("and"):
            self.advance()
            expr = And(expr, self.parse_not())
        return expr

    def parse_not(self) -> Expr:
        if not self.token.is_word("not"):
            return self.parse_primary()
        with self.nested(self.token):
            self.advance()
            return Not(self.parse_not())

    def parse_primary(self) -> Expr:
        token = self.token
        if token.text == "(" and token.kind == "op":
            with self.nested(token):
                self.advance()
                expr = self.parse_or()
                if self.token.text != ")" or self.token.kind != "op":
                    if self.token.kind == "end":
                        raise self.fail("unbalanced parentheses: this '(' is never closed", token)
                    raise self.fail(f"expected ')' to close the '(' at column {token.start + 1}, "
                                    f"got {self.token.describe()}")
                self.advance()
                return expr
        return self.parse_predicate()

    def nested(self, token: _Token) -> _Nesting:
        return _Nesting(self, token)

    def parse_ref(self, context: str) -> Ref:
        token = self.token
        if token.kind != "word":
            raise self.fail(f"expected a field, metrics.<name> or tag {context}, got {token.describe()}")
        word = token.text.lower()
        if word == "tag":
            self.advance()
            return Tag(span=(token.start, token.end))
        if word == "metrics":
            self.advance()
            if self.token.text != "." or self.token.kind != "op":
                raise self.fail("expected '.' and a metric name after 'metrics' (as in metrics.accuracy)",
                                token)
            self.advance()
            return self.parse_metric_name(token)
        if word in KEYWORDS:
            raise self.fail(f"expected a field, metrics.<name> or tag {context}, got the keyword "
                            f"{token.text!r}")
        if token.text == "tags":
            raise self.fail("'tags' is a list; test it with tag = \"x\" or tag in (\"x\", \"y\")")
        self.advance()
        return Field(token.text, span=(token.start, token.end))

    def parse_metric_name(self, metrics_token: _Token) -> Metric:
        token = self.token
        if token.kind == "string":
            if not token.value:
                raise self.fail("empty metric name")
            self.advance()
            return Metric(token.value, span=(metrics_token.start, token.end))
        if token.kind != "word":
            raise self.fail(f"expected a metric name after 'metrics.', got {token.describe()}")
        parts = [self.advance().text]
        end = token.end
        # Dotted names (metrics.mmlu.stem) continue while a '.' is glued to the next word.
        while (self.token.text == "." and self.token.kind == "op" and self.token.start == end
               and self.tokens[self.pos + 1].kind == "word" and self.tokens[self.pos + 1].start == end + 1):
            self.advance()
            part = self.advance()
            parts.append(part.text)
            end = part.end
        return Metric(".".join(parts), span=(metrics_token.start, end))

    def parse_predicate(self) -> Expr:
        ref = self.parse_ref("to compare")
        token = self.token
        if token.kind == "op" and token.value in COMPARISON_OPS:
            self.advance()
            if isinstance(ref, Tag) and token.value not in ("=", "!="):
                raise self.fail(f"tags are a set: use tag = \"x\", tag != \"x\" or tag in (...), "
                                f"not {token.text!r}", token)
            value, span = self.parse_value(ref, f"after {token.text!r}")
            return Comparison(ref, token.value, value, value_span=span)
        if token.is_word("in") or (token.is_word("not") and self.tokens[self.pos + 1].is_word("in")):
            negated = token.is_word("not")
            self.pos += 2 if negated else 1
            return self.parse_in_list(ref, negated)
        if token.is_word("is"):
            self.advance()
            negated = self.token.is_word("not")
            if negated:
                self.advance()
            if not self.token.is_word("null"):
                raise self.fail(f"expected 'null' after 'is{' not' if negated else ''}', "
                                f"got {self.token.describe()}")
            if isinstance(ref, Tag):
                raise self.fail("tags are never null; use tag = \"x\" or not tag in (...)", self.token)
            self.advance()
            return IsNull(ref, negated)
        raise self.fail(f"expected a comparison (= != < <= > >=), 'in', 'not in' or 'is' after {ref}, "
                        f"got {token.describe()}")

    def parse_in_list(self, ref: Ref, negated: bool) -> InList:
        keyword = "not in" if negated else "in"
        if self.token.text != "(" or self.token.kind != "op":
            raise self.fail(f"expected '(' after '{keyword}', got {self.token.describe()}")
        opening = self.advance()
        if self.token.text == ")" and self.token.kind == "op":
            raise self.fail(f"expected at least one value in '{keyword} (...)'")
        values, spans = [], []
        while True:
            value, span = self.parse_value(ref, f"in '{keyword} (...)'")
            values.append(value)
            spans.append(span)
            if self.token.text == "," and self.token.kind == "op":
                self.advance()
                continue
            if self.token.text == ")" and self.token.kind == "op":
                self.advance()
                return InList(ref, tuple(values), negated, value_spans=tuple(spans))
            if self.token.kind == "end":
                raise self.fail("unbalanced parentheses: this '(' is never closed", opening)
            raise self.fail(f"expected ',' or ')' in '{keyword} (...)', got {self.token.describe()}")

    def parse_value(self, ref: Ref, context: str) -> tuple[Literal, Span]:
        token = self.token
        if token.is_word("null"):
            raise self.fail("null never equals anything; use 'is null' or 'is not null'")
        if token.is_word("true", "false"):
            value: Literal = token.text.lower() == "true"
        elif token.kind in ("string", "number"):
            value = token.value
        else:
            raise self.fail(f"expected a value {context}, got {token.describe()}")
        span = (token.start, token.end)
        if isinstance(ref, Tag) and not isinstance(value, str):
            raise self.fail(f"tags are strings; expected a quoted string {context}, got {token.text}")
        if isinstance(ref, Metric) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise self.fail(f"{ref} is a number; expected a number {context}, got {token.text}")
        self.advance()
        return value, span

    def parse_order_by(self) -> tuple[OrderKey, ...]:
        self.advance()
        if not self.token.is_word("by"):
            raise self.fail(f"expected 'by' after 'order', got {self.token.describe()}")
        self.advance()
        keys = []
        while True:
            token = self.token
            if token.kind == "end" or token.is_word("limit") or (token.kind == "op" and token.text == ","):
                raise self.fail("expected a field or metrics.<name> after 'order by'"
                                if not keys else "expected a field or metrics.<name> after ','")
            ref = self.parse_ref("to order by")
            if isinstance(ref, Tag):
                raise self.fail("cannot order by tag (a set); order by a field or metrics.<name>", token)
            descending = False
            if self.token.is_word("asc", "desc"):
                descending = self.advance().text.lower() == "desc"
            keys.append(OrderKey(ref, descending))
            if not (self.token.text == "," and self.token.kind == "op"):
                break
            self.advance()
        return tuple(keys)

    def parse_limit(self) -> int:
        self.advance()
        token = self.token
        if token.kind == "end":
            raise self.fail("expected a row count after 'limit'")
        if token.kind != "number" or not isinstance(token.value, int) or token.value < 0:
            raise self.fail(f"limit must be a non-negative integer, got {token.text or token.describe()}")
        self.advance()
        return token.value


class _Nesting:
    """Counts '(' and 'not' depth so that hostile input fails cleanly instead of exhausting the stack."""

    def __init__(self, parser: _Parser, token: _Token):
        self.parser = parser
        self.token = token

    def __enter__(self) -> None:
        self.parser.depth += 1
        if self.parser.depth > MAX_NESTING:
            raise self.parser.fail(f"query nested more than {MAX_NESTING} levels deep", self.token)

    def __exit__(self, *exc: object) -> None:
        self.parser.depth -= 1


# ---------------------------------------------------------------------------------------------------
# Evaluation on a versions frame.

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _field_refs(query: Query) -> list[Field]:
    refs: list[Field] = []

    def visit(expr: Expr) -> None:
        if isinstance(expr, (And, Or)):
            visit(expr.left)
            visit(expr.right)
        elif isinstance(expr, Not):
            visit(expr.operand)
        elif isinstance(expr.ref, Field):  # type: ignore[attr-defined]
            refs.append(expr.ref)  # type: ignore[attr-defined]

    if query.where is not None:
        visit(query.where)
    refs.extend(key.ref for key in query.ordering if isinstance(key.ref, Field))
    return refs


def _unknown_field(ref: Field, known: Sequence[str], text: str | None) -> QuerySyntaxError:
    close = difflib.get_close_matches(ref.name, known, n=1, cutoff=0.6)
    close = close or [name for name in known if name.lower() == ref.name.lower()]
    hint = f"did you mean {close[0]!r}? " if close else ""
    return QuerySyntaxError(
        f"unknown field {ref.name!r}; {hint}known fields: {', '.join(known)} "
        "(and metrics.<name>, tag)", text, ref.span)


class _Rows:
    """One apply's view of the frame: columns by position, with metrics and tags decoded once."""

    def __init__(self, frame: pd.DataFrame, text: str | None):
        self.frame = frame.reset_index(drop=True)
        self.text = text
        self._metrics: list[dict] | None = None
        self._tags: list[frozenset[str]] | None = None

    def error(self, reason: str, span: Span | None) -> QuerySyntaxError:
        return QuerySyntaxError(reason, self.text, span)

    def row_name(self, position: int) -> str:
        row = self.frame.iloc[position]
        model = row.get("model", row.get("model_name"))
        if model is not None and "version" in row:
            return f"version row {position} ({model} v{row['version']})"
        return f"version row {position}"

    def column(self, ref: Field) -> pd.Series:
        if ref.name not in self.frame.columns:
            raise _unknown_field(ref, sorted(map(str, self.frame.columns)), self.text)
        return self.frame[ref.name]

    def required(self, name: str, ref: Ref) -> pd.Series:
        if name not in self.frame.columns:
            raise self.error(f"{ref} needs a {name!r} column, and the versions frame has none", ref.span)
        return self.frame[name]

    def metrics(self, ref: Metric) -> list[dict]:
        if self._metrics is None:
            self._metrics = [self.decode(value, dict, "metrics", "a JSON object", i)
                             for i, value in enumerate(self.required("metrics", ref))]
        return self._metrics

    def tags(self, ref: Tag) -> list[frozenset[str]]:
        if self._tags is None:
            self._tags = [frozenset(map(str, self.decode(value, list, "tags", "a JSON list", i)))
                          for i, value in enumerate(self.required("tags", ref))]
        return self._tags

    def decode(self, value: Any, kind: type, column: str, expected: str, position: int) -> Any:
        if isinstance(value, (list, tuple, set, frozenset, np.ndarray)) and kind is list:
            return list(value)
        if isinstance(value, dict) and kind is dict:
            return value
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return kind()
        if isinstance(value, str):
            try:
                decoded = json.loads(value) if value.strip() else kind()
            except json.JSONDecodeError:
                decoded = None
            if isinstance(decoded, kind):
                return decoded
        raise ValueError(f"{self.row_name(position)}: {column} is not {expected}: {value!r}")

    def metric_values(self, ref: Metric) -> pd.Series:
        values = [_metric_number(_lookup(entry, ref.name)) for entry in self.metrics(ref)]
        return pd.Series(values, dtype="float64")

    def order_values(self, ref: Field | Metric) -> pd.Series:
        return self.metric_values(ref) if isinstance(ref, Metric) else self.column(ref)

    def evaluate(self, expr: Expr) -> pd.Series:
        """A nullable-boolean Series: True, False or NA (unknown), combined with Kleene logic."""
        if isinstance(expr, And):
            return self.evaluate(expr.left) & self.evaluate(expr.right)
        if isinstance(expr, Or):
            return self.evaluate(expr.left) | self.evaluate(expr.right)
        if isinstance(expr, Not):
            return ~self.evaluate(expr.operand)
        if isinstance(expr.ref, Tag):  # type: ignore[attr-defined]
            return self.evaluate_tags(expr)
        if isinstance(expr, IsNull):
            values = self.order_values(expr.ref)
            return (values.notna() if expr.negated else values.isna()).astype("boolean")
        if isinstance(expr, Comparison):
            values, kind = self.typed_values(expr.ref)
            literal = self.coerce(expr.ref, kind, expr.value, expr.value_span)
            return _compare(values, expr.op, literal)
        if isinstance(expr, InList):
            values, kind = self.typed_values(expr.ref)
            spans = expr.value_spans or (None,) * len(expr.values)
            literals = [self.coerce(expr.ref, kind, value, span) for value, span in zip(expr.values, spans, strict=True)]
            matched = _compare_any(values, literals)
            return ~matched if expr.negated else matched
        raise TypeError(f"not a query condition: {expr!r}")

    def evaluate_tags(self, expr: Comparison | InList) -> pd.Series:
        wanted = {expr.value} if isinstance(expr, Comparison) else set(expr.values)
        contains = pd.Series([not wanted.isdisjoint(tags) for tags in self.tags(expr.ref)], dtype="boolean")
        negate = expr.op == "!=" if isinstance(expr, Comparison) else expr.negated
        return ~contains if negate else contains

    def typed_values(self, ref: Field | Metric) -> tuple[pd.Series, str]:
        if isinstance(ref, Metric):
            return self.metric_values(ref), "number"
        values = self.column(ref)
        if pd.api.types.is_datetime64_any_dtype(values):
            if values.dt.tz is None:
                values = values.dt.tz_localize("UTC")
            return values, "timestamp"
        if pd.api.types.is_bool_dtype(values):
            return values, "bool"
        if pd.api.types.is_numeric_dtype(values):
            return values, "number"
        return values.astype(object), "any"

    def coerce(self, ref: Field | Metric, kind: str, value: Literal, span: Span | None) -> Any:
        """The literal as the column's type; a literal that cannot be is a type mismatch."""
        if kind == "timestamp":
            if not isinstance(value, str):
                raise self.error(f"type mismatch: {ref} is a timestamp; compare it with an ISO date/time "
                                 f"string such as \"2024-05-01T12:00:00Z\", not {_render_literal(value)}",
                                 span)
            parsed = _parse_timestamp(value)
            if parsed is None:
                raise self.error(f"type mismatch: {ref} is a timestamp and {_render_literal(value)} is not "
                                 "an ISO date/time (e.g. \"2024-05-01\" or \"2024-05-01T12:00:00Z\")", span)
            return parsed
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.error(f"type mismatch: {ref} is true/false, not {_render_literal(value)}", span)
            return value
        if kind == "number":
            if isinstance(value, bool):
                raise self.error(f"type mismatch: {ref} is a number, not {_render_literal(value)}", span)
            if isinstance(value, str):
                number = _parse_number(value)
                if number is None:
                    raise self.error(f"type mismatch: {ref} is a number and {_render_literal(value)} is not "
                                     "a number", span)
                return number
        return value


def _lookup(entry: dict, name: str) -> Any:
    if name in entry:
        return entry[name]
    # Nested metrics ({"mmlu": {"stem": 0.4}}) answer to metrics.mmlu.stem as well.
    node: Any = entry
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _metric_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return math.nan
    return float(value)


def _parse_number(text: str) -> int | float | None:
    raw = text.strip()
    if len(raw) > _MAX_NUMBER_CHARS or not _NUMBER.fullmatch(raw):
        return None
    return _number_value(raw)


def _parse_timestamp(text: str) -> pd.Timestamp | None:
    candidate = text.strip()
    if candidate[-1:] in ("Z", "z"):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return pd.Timestamp(moment).tz_convert("UTC")


def _compare(values: pd.Series, op: str, literal: Any) -> pd.Series:
    compare = _OPS[op]
    missing = values.isna().to_numpy()
    if values.dtype == object:
        # Mixed Python values: a pair that does not compare (str < int) is unknown, not an error.
        result = [pd.NA if gone else _safe(compare, value, literal) for value, gone in zip(values, missing, strict=True)]
        return pd.Series(result, dtype="boolean")
    result = pd.Series(compare(values, literal), dtype="boolean").reset_index(drop=True)
    result[missing] = pd.NA
    return result


def _compare_any(values: pd.Series, literals: list[Any]) -> pd.Series:
    result = pd.Series(False, index=range(len(values)), dtype="boolean")
    for literal in literals:
        result = result | _compare(values, "=", literal).fillna(False)
    result[values.isna().to_numpy()] = pd.NA
    return result


def _safe(compare: Callable[[Any, Any], Any], value: Any, literal: Any) -> Any:
    try:
        return bool(compare(value, literal))
    except (TypeError, ValueError):
        return pd.NA
