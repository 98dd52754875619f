"""The shipped word pools are large, clean, and partitioned into disjoint splits."""

from itertools import combinations

import pytest

from train.data import SPLITS
from train.data.pools import AGES, CODES, POOL_FILES, partition, read_pool, split_pool
from train.data.synthetic import KINDS, VALUE_POOLS

MINIMUM_SIZES = {"first_names": 300, "surnames": 300, "cities": 100, "jobs": 60, "pets": 40,
                 "colours": 40, "items": 40}


@pytest.mark.parametrize("name", POOL_FILES)
def test_pool_is_large_and_has_no_blank_or_padded_entries(name):
    entries = read_pool(name)
    assert len(entries) >= MINIMUM_SIZES[name]
    assert all(entry == entry.strip() and entry for entry in entries)


def test_first_names_and_surnames_never_overlap():
    assert not set(read_pool("first_names")) & set(read_pool("surnames"))


def test_full_names_run_to_thousands_in_train_and_hundreds_in_test():
    def full_names(split):
        return len(split_pool("first_names", split)) * len(split_pool("surnames", split))
    assert full_names("train") > 10_000 and full_names("test") > 1_000


@pytest.mark.parametrize("name", list(POOL_FILES) + ["codes", "ages"])
def test_split_pools_are_disjoint_and_cover_the_pool(name):
    parts = [set(split_pool(name, split)) for split in SPLITS]
    for a, b in combinations(parts, 2):
        assert not a & b
    assert set().union(*parts) == set({"codes": CODES, "ages": AGES}.get(name) or read_pool(name))


@pytest.mark.parametrize("kind", KINDS)
def test_every_split_has_enough_values_for_an_eight_fact_single_kind_passage(kind):
    assert all(len(split_pool(VALUE_POOLS[kind], split)) >= 8 for split in SPLITS)


def test_partition_is_exact_in_size_and_independent_of_input_order():
    entries = tuple(f"w{i}" for i in range(100))
    parts = partition(entries, salt="s")
    assert [len(parts[s]) for s in SPLITS] == [70, 15, 15]
    assert partition(tuple(reversed(entries)), salt="s") == parts
    assert partition(entries, salt="other") != parts


def test_template_tables_never_reuse_a_wording_in_two_splits():
    from train.data.templates import ARITHMETIC, RELAY_FACTS, RELAY_QUESTIONS
    for table in (RELAY_FACTS, RELAY_QUESTIONS, ARITHMETIC):
        for slot, by_split in table.items():
            assert sorted(by_split) == sorted(SPLITS), slot
            for a, b in combinations(SPLITS, 2):
                assert not set(by_split[a]) & set(by_split[b]), (slot, a, b)
