"""API keys: configured by digest, parsed strictly, never stored in the clear."""

from __future__ import annotations

import pytest

from domain.keys import Principal, Role, digest, new_key, parse_keys


def test_a_key_is_configured_by_its_digest_only() -> None:
    key = new_key(Role.MERCHANT)
    assert key.startswith("pk_merchant_") and len(key) > 40
    keys = parse_keys(f"shop-1:merchant:{digest(key)}, ops:admin:{digest('another')}")
    assert keys[digest(key)] == Principal("shop-1", Role.MERCHANT)
    assert keys[digest("another")].is_admin
    assert key not in repr(keys)


@pytest.mark.parametrize(
    "bad",
    [
        "shop:merchant",  # no digest
        f"shop:owner:{digest('k')}",  # unknown role
        "shop:merchant:abc",  # not a sha256
        f"shop:merchant:{digest('k').upper()}",  # upper case
        f"a:merchant:{digest('k')},a:admin:{digest('j')}",  # duplicate name
    ],
)
def test_bad_key_settings_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="api_keys"):
        parse_keys(bad)


def test_settings_refuse_bad_keys_at_start(tmp_path) -> None:
    from payments.settings import Settings

    with pytest.raises(ValueError, match="api_keys"):
        Settings(data_dir=tmp_path, api_keys="shop:merchant:nothex")


def test_secrets_never_show_in_the_settings_repr(tmp_path) -> None:
    from payments.settings import Settings

    settings = Settings(data_dir=tmp_path, stripe_api_key="sk_live_do_not_print")
    assert "sk_live_do_not_print" not in repr(settings) and "sk_live" not in str(settings)
