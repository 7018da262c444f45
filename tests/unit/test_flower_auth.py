"""`flowkit flower`'s basic-auth users and its refusal to serve other machines without them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from flowkit.cli import main
from flowkit.errors import ConfigError
from flowkit.observe.flower_auth import basic_auth_users, check_exposure, is_loopback


def test_users_are_user_password_pairs_separated_by_commas():
    assert basic_auth_users(None) == [] and basic_auth_users(" ") == []
    assert basic_auth_users("ops:s3cret, admin:a:b") == ["ops:s3cret", "admin:a:b"]


@pytest.mark.parametrize("raw", ["ops", "ops:", ":pw", "ops:pw,,x:y"])
def test_a_malformed_entry_is_named_without_echoing_a_password(raw):
    with pytest.raises(ConfigError) as err:
        basic_auth_users(raw)
    message = str(err.value)
    assert message.startswith("FLOWKIT_FLOWER_BASIC_AUTH: entry ") and "write user:password" in message
    assert "pw" not in message


def test_only_loopback_listens_without_users_unless_insecure():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("flower.example.com")
    check_exposure("127.0.0.1", [], insecure=False)
    check_exposure("0.0.0.0", ["ops:pw"], insecure=False)
    check_exposure("0.0.0.0", [], insecure=True)
    with pytest.raises(ConfigError, match="would serve Flower without authentication"):
        check_exposure("0.0.0.0", [], insecure=False)


def test_flowkit_flower_refuses_in_one_line_before_touching_the_broker(tmp_path):
    env = {"FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path}/f.db", "FLOWKIT_FLOWER_BASIC_AUTH": ""}
    result = CliRunner().invoke(main, ["flower", "--address", "0.0.0.0"], env=env)
    assert result.exit_code == 1
    assert result.output == (
        "error: flowkit flower --address '0.0.0.0' (0.0.0.0) would serve Flower without authentication; "
        "set FLOWKIT_FLOWER_BASIC_AUTH=user:password (or listen on 127.0.0.1, or add --insecure if a proxy "
        "in front of it authenticates)\n"
    )
    bad = CliRunner().invoke(main, ["flower"], env={**env, "FLOWKIT_FLOWER_BASIC_AUTH": "ops"})
    assert bad.exit_code == 1 and bad.output.startswith("error: FLOWKIT_FLOWER_BASIC_AUTH: entry 1 (ops) is not")
