"""The validated YAML reader: every error names the file, the key and what is expected."""

from __future__ import annotations

import re

import pytest

from quantwarehouse.config import ConfigError, load_config


def write(tmp_path, text: str, name: str = "thing.yml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(call) -> str:
    with pytest.raises(ConfigError) as caught:
        call()
    return str(caught.value)


def test_reads_nested_values_with_their_types(tmp_path):
    path = write(
        tmp_path,
        "name: x\ncount: 3\nratio: 2\nbig: 1e6\nflag: false\n"
        "inner: {items: [a, b]}\nrows: [{k: 1}, {k: 2}]\n",
    )
    node = load_config(path)
    assert node.value("name", str) == "x"
    assert node.value("count", int) == 3
    assert node.value("ratio", float) == 2.0 and isinstance(node.value("ratio", float), float)
    assert node.value("big", float) == 1_000_000.0  # PyYAML reads 1e6 as text
    assert node.value("flag", bool) is False
    assert node.value("absent", int, default=7) == 7
    assert node.child("inner").items("items", str) == ["a", "b"]
    assert [child.value("k", int) for child in node.children("rows")] == [1, 2]
    assert node.child("nothing", default={}).data == {}


def test_missing_file(tmp_path):
    message = error_of(lambda: load_config(tmp_path / "nope.yml"))
    assert "nope.yml" in message and "not found" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1, 2\n", r"not valid YAML at line 2, column 1"),
        ("a: b: c\n", r"not valid YAML at line 1, column 5: mapping values are not allowed"),
        ("- 1\n- 2\n", r"expected a mapping of keys at the top level, got a list \(\[1, 2\]\)"),
        ("", r"expected a mapping of keys at the top level, got nothing \(null\)"),
    ],
)
def test_unreadable_files_say_why(tmp_path, text, expected):
    path = write(tmp_path, text)
    message = error_of(lambda: load_config(path))
    assert message.startswith(f"{path}: ")
    assert re.search(expected, message), message


@pytest.mark.parametrize(
    ("text", "read", "expected"),
    [
        ("n: ten\n", lambda n: n.value("n", int), "n: expected an integer, got a string ('ten')"),
        ("n: true\n", lambda n: n.value("n", int), "n: expected an integer, got a boolean (true)"),
        ("n: 2.5\n", lambda n: n.value("n", int), "n: expected an integer, got a number (2.5)"),
        ("x: [1]\n", lambda n: n.value("x", float), "x: expected a number, got a list ([1])"),
        ("x: yes\n", lambda n: n.value("x", str), "x: expected a string, got a boolean (true)"),
        ("{}\n", lambda n: n.value("x", str), "x: missing; expected a string"),
        ("n: -1\n", lambda n: n.value("n", int, at_least=0), "n: expected a value >= 0, got -1"),
        (
            "op: gte\n",
            lambda n: n.choice("op", ("gt", "lt")),
            "op: unknown value 'gte'; allowed: gt, lt",
        ),
        (
            "a: {b: {c: 1}}\n",
            lambda n: n.child("a").child("b").value("c", str),
            "a.b.c: expected a string, got an integer (1)",
        ),
        (
            "rows: [{k: 1}, {k: x}]\n",
            lambda n: [c.value("k", int) for c in n.children("rows")],
            "rows[1].k: expected an integer, got a string ('x')",
        ),
        (
            "q: [USDT, 3]\n",
            lambda n: n.items("q", str),
            "q[1]: expected a string, got an integer (3)",
        ),
        (
            "rows: [1]\n",
            lambda n: n.children("rows"),
            "rows[0]: expected a mapping, got an integer (1)",
        ),
        (
            "limt: 3\n",
            lambda n: n.only_keys(("limit", "sort")),
            "limt: unknown key; allowed keys: limit, sort",
        ),
    ],
)
def test_bad_values_name_file_key_and_expectation(tmp_path, text, read, expected):
    path = write(tmp_path, text)
    message = error_of(lambda: read(load_config(path)))
    assert message == f"{path}: {expected}"


def test_config_error_is_a_value_error_for_the_cli():
    # The CLI turns ValueError into exit status 2 with the message as the last line.
    assert issubclass(ConfigError, ValueError)


def test_an_impossible_date_names_the_file(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("start: 2024-13-01\n")
    with pytest.raises(ConfigError, match=r"bad\.yml: a value cannot be read: month must be"):
        load_config(path)
