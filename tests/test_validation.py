"""The shared checks: what each accepts, and that every refusal names the field, the value and what is allowed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repro.config import ConfigError
from repro.validation import (
    ValidationError,
    as_mapping,
    check_bool,
    check_choice,
    check_int,
    check_keys,
    check_name,
    check_real,
    invalid,
    one_line,
)


def test_invalid_names_field_value_and_allowed():
    e = invalid("train.lr", -1, "must be > 0")
    assert isinstance(e, ValueError)
    assert str(e) == "train.lr: -1 is not allowed; must be > 0"


def test_config_errors_are_validation_errors():
    # one class for every layer: a model or objective refusal read from params.yaml is a ConfigError too
    assert ConfigError is ValidationError


@pytest.mark.parametrize("value", [True, False])
def test_bool_accepts_bools(value):
    check_bool("flag", value)


@pytest.mark.parametrize("value", [0, 1, "yes", None, 1.0])
def test_bool_refuses_other_values(value):
    with pytest.raises(ValidationError, match=rf"^flag: {repr(value)!s} is not allowed; must be true or false$"):
        check_bool("flag", value)


@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(-50, 50) | st.none())
def test_int_bounds(value, low, high):
    inside = value >= low and (high is None or value <= high)
    if inside:
        check_int("n", value, low=low, high=high)
    else:
        with pytest.raises(ValidationError, match=rf"^n: {value} is not allowed; must be an integer >= {low}"):
            check_int("n", value, low=low, high=high)


@pytest.mark.parametrize("value", [True, 2.0, "2", None])
def test_int_refuses_non_integers(value):
    with pytest.raises(ValidationError, match="must be an integer >= 1$"):
        check_int("n", value)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10))
def test_real_bounds_match_the_comparisons(value):
    inside = not math.isnan(value) and math.isfinite(value) and 0 <= value < 1
    if inside:
        check_real("p", value, ge=0, lt=1)
    else:
        with pytest.raises(ValidationError, match=r"^p: .* is not allowed; must be a finite real number >= 0 and < 1$"):
            check_real("p", value, ge=0, lt=1)


def test_real_strict_and_open_bounds():
    check_real("x", 0.0, ge=0.0)
    with pytest.raises(ValidationError, match=r"must be a finite real number > 0"):
        check_real("x", 0.0, gt=0.0)
    check_real("x", 1.0, le=1.0)
    with pytest.raises(ValidationError, match=r"< 1"):
        check_real("x", 1.0, lt=1.0)


def test_real_infinity_only_when_allowed():
    check_real("t", math.inf, ge=0.0, allow_inf=True)
    with pytest.raises(ValidationError, match=r"^t: inf is not allowed; must be a finite real number >= 0"):
        check_real("t", math.inf, ge=0.0)
    with pytest.raises(ValidationError, match=r"^t: nan is not allowed; must be a real number"):
        check_real("t", math.nan, allow_inf=True)


@pytest.mark.parametrize("value", [True, "1", None, [1.0]])
def test_real_refuses_non_numbers(value):
    with pytest.raises(ValidationError, match=r"must be a finite real number$"):
        check_real("x", value)


def test_choice_lists_the_allowed_values():
    check_choice("norm", "rmsnorm", ("layernorm", "rmsnorm"))
    with pytest.raises(ValidationError, match=r"^norm: unknown value 'bn'; allowed: 'layernorm', 'rmsnorm'$"):
        check_choice("norm", "bn", ("layernorm", "rmsnorm"))


@pytest.mark.parametrize("name", ["micro", "DiT-S.2", "a_b-c", "0"])
def test_names_that_can_be_folders(name):
    check_name("scale", name)


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", ".hidden", 3, None])
def test_names_that_cannot_be_folders(name):
    with pytest.raises(ValidationError, match=r"^scale: .* is not allowed; must be a name of letters"):
        check_name("scale", name)


def test_mapping_and_keys():
    assert as_mapping("train", None) == {}
    section = {"lr": 1e-3}
    copied = as_mapping("train", section)
    assert copied == section and copied is not section
    with pytest.raises(ValidationError, match=r"^train: \[1\] is not allowed; must be a mapping of settings$"):
        as_mapping("train", [1])
    check_keys("train", {"lr": 1}, ("lr", "steps"))
    with pytest.raises(ValidationError, match=r"^train\.lrr: unknown key; allowed: lr, steps$"):
        check_keys("train", {"lr": 1, "lrr": 2}, ("lr", "steps"))
    with pytest.raises(ValidationError, match=r"^params\.x: unknown section; allowed: scales$"):
        check_keys("params", {"x": 1}, ("scales",), "section")


def test_one_line_joins_whitespace():
    assert one_line(ValueError("a\n  b\tc ")) == "a b c"
