"""Settings: built once from a command's options and the environment, handed to workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from coalition.cli import build_parser
from coalition.programme.config import REFERRAL_BONUS_POINTS_MAX, ReferralDefaults
from coalition.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_GROUP_COMMIT,
    GroupCommit,
    Observability,
    RateLimit,
    Settings,
    SettingsError,
    settings_from,
)

pytestmark = pytest.mark.unit


def settings_of(argv: list[str], environment: dict[str, str] | None = None) -> Settings:
    return settings_from(build_parser().parse_args(argv), environment or {})


def test_an_option_wins_over_the_environment_which_wins_over_the_default() -> None:
    environment = {
        "COALITION_DATABASE_URL": "sqlite:///from-environment.db",
        "COALITION_PROGRAMME_DIR": "programme-from-environment",
    }
    assert settings_of(["db", "upgrade"]).database_url == DEFAULT_DATABASE_URL
    assert settings_of(["db", "upgrade"], environment).database_url.endswith("environment.db")
    given = settings_of(["serve", "--db", "sqlite:///given.db", "--programme", "p"], environment)
    assert (given.database_url, given.programme_directory) == ("sqlite:///given.db", Path("p"))
    assert settings_of(["jobs", "run", "tiers"], environment).programme_directory == Path(
        "programme-from-environment"
    )


def test_serve_options_become_one_value_a_spawned_worker_can_be_given() -> None:
    settings = settings_of(
        [
            *("serve", "--workers", "3", "--rate-limit", "2.5", "--log-format", "json"),
            *("--access-log", "--group-window-ms", "2.5", "--group-size-max", "128"),
        ],
        {"COALITION_REFERRAL_BONUS_POINTS": "0", "COALITION_IDENTITY_SECRET": "ab" * 32},
    )
    assert settings.workers == 3
    assert settings.group_commit == GroupCommit(2.5, 128)
    assert settings_of(["serve"]).group_commit == DEFAULT_GROUP_COMMIT == GroupCommit(0, 64)
    assert settings.rate_limit == RateLimit(2.5, 2)
    assert settings.observability == Observability("json", True, None)
    assert settings.referral == ReferralDefaults(0, 1)
    assert pickle.loads(pickle.dumps(settings)) == settings  # what `spawn` does with it
    assert "ab" * 32 not in repr(settings)  # the secret is never shown


@pytest.mark.parametrize(
    ("argv", "environment", "refusal"),
    [
        (["serve", "--workers", "0"], {}, "--workers"),
        (["serve", "--job-interval", "holds=5"], {}, "--job-interval needs --jobs"),
        (["serve", "--tls-cert", "hub.pem"], {}, "go together"),
        (["serve", "--rate-limit", "-1"], {}, "--rate-limit"),
        (["serve", "--group-window-ms", "101"], {}, "--group-window-ms"),
        (["serve", "--group-window-ms", "-1"], {}, "--group-window-ms"),
        (["serve", "--group-size-max", "0"], {}, "--group-size-max"),
        (["serve", "--group-size-max", "1001"], {}, "--group-size-max"),
        (
            ["db", "upgrade"],
            {"COALITION_REFERRAL_BONUS_POINTS": str(REFERRAL_BONUS_POINTS_MAX + 1)},
            "COALITION_REFERRAL_BONUS_POINTS",
        ),
        (["db", "upgrade"], {"COALITION_REFERRAL_QUALIFYING_POINTS": "many"}, "an integer"),
    ],
)
def test_a_bad_setting_is_refused_by_name(
    argv: list[str], environment: dict[str, str], refusal: str
) -> None:
    with pytest.raises(SettingsError, match=refusal):
        settings_of(argv, environment)
