"""Seeded text from a contract's whole domain: every class, within the limit in both counts."""

from __future__ import annotations

import importlib
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from grading import domain

contract = importlib.import_module("challenges.rate-limiter.solutions.contract")


@settings(max_examples=200, deadline=None, database=None)
@given(seed=st.integers(), length=st.integers(1, 128))
def test_drawn_keys_are_valid_for_the_contract_and_stay_within_the_limit(
    seed: int, length: int
) -> None:
    rng = random.Random(seed)
    key = domain.tagged(rng, "t-1", max(3, length), limit=128)
    assert "t-1" in key and len(key) == max(3, length)
    assert domain.utf16_length(key) <= 128
    assert "\x00" not in key
    key.encode("utf-8")  # no lone surrogate
    body = json.dumps({"key": key}, ensure_ascii=False).encode()
    assert contract.parse_check(body).key == key


def test_every_class_is_drawn_and_a_seed_gives_the_same_text() -> None:
    drawn = domain.text(random.Random(5), 600)
    assert drawn == domain.text(random.Random(5), 600)
    assert {domain.kind_of(c) for c in drawn} == set(domain.CLASSES)
    utf8 = {len(c.encode()) for c in drawn}
    assert utf8 == {1, 2, 3, 4}


def test_a_full_length_key_counts_the_same_in_code_points_and_utf16() -> None:
    rng = random.Random(9)
    for _ in range(50):
        key = domain.text(rng, 128, limit=128)
        assert len(key) == domain.utf16_length(key) == 128
        assert len(key.encode()) > 128  # more bytes than characters: a byte limit is caught


def test_another_character_of_the_same_class() -> None:
    rng = random.Random(1)
    for c in ("a", "é", "中", "😀", "\t", "%"):
        other = domain.other_char(rng, c)
        assert other != c and domain.kind_of(other) == domain.kind_of(c)
        assert len(other.encode()) == len(c.encode())


@settings(max_examples=100, deadline=None, database=None)
@given(seed=st.integers(), limit=st.integers(40, 300))
def test_edge_texts_pair_keys_a_careless_service_would_merge(seed: int, limit: int) -> None:
    one, long, long2, short, short2 = domain.edge_texts(random.Random(seed), "t-9", limit)
    assert len(one[1]) == 1 and not one[2]
    assert len(long[1]) == len(long2[1]) == limit == domain.utf16_length(long[1])
    assert long[1][:-1] == long2[1][:-1] and long[1] != long2[1]  # cut short: one key
    assert len(short[1]) == len(short2[1]) <= limit // 2 + 1
    differ = [i for i, (a, b) in enumerate(zip(short[1], short2[1], strict=True)) if a != b]
    assert len(differ) == 1
    a, b = short[1][differ[0]], short2[1][differ[0]]
    assert ord(a) > 0x7F and ord(b) > 0x7F and len(a.encode()) == len(b.encode())
    assert a.encode("ascii", "replace") == b.encode("ascii", "replace")  # ASCII'd: one key
    assert all(fresh for _, _, fresh in (long, long2, short, short2))
    assert len({t for _, t, _ in (long, long2, short, short2)}) == 4
