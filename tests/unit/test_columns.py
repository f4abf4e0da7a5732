"""Text cleaning for the store's text columns: what PostgreSQL refuses becomes visible escapes."""

from __future__ import annotations

from gateway.store.columns import clean_json, clean_text


def test_controls_and_surrogates_become_escapes_and_plain_text_is_untouched():
    assert clean_text("<a\x00b\x1b\udcff@x>") == "<a\\x00b\\x1b\\udcff@x>"
    assert clean_text("Priya Pätel <p@example.com>") == "Priya Pätel <p@example.com>"


def test_values_are_cut_to_the_column_length():
    assert clean_text("a" * 400, 320) == "a" * 320
    assert len(clean_text("\x00" * 100, 64)) == 64


def test_json_strings_lose_nul_and_surrogates_but_keep_other_characters():
    assert clean_json([{"rule": "x\x00", "evidence": "tab\there\udcff"}]) == [
        {"rule": "x\\x00", "evidence": "tab\there\\udcff"}]
