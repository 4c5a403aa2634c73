"""The hub's configuration: one `Settings` value, built once when a command starts.

It comes from the command's options, the environment and files, here and nowhere else:
nothing below the command line reads the environment, and `coalition serve` hands its
`Settings` to every worker process as an argument (spawned workers receive it pickled) rather
than writing variables for them to read back.

The environment variables, each overridden by its option where the command has one:

COALITION_DATABASE_URL                the database (`--db`; default sqlite:///coalition.db)
COALITION_SIGNING_KEY                 the settlement signing key file (`--signing-key`)
COALITION_PROGRAMME_DIR               tiers.toml and promotions.toml (`--programme`)
COALITION_IDENTITY_SECRET             the identity secret, hex (identity/secret.py)
COALITION_IDENTITY_SECRET_FILE        a file holding it
COALITION_REFERRAL_BONUS_POINTS       each side's referral bonus without any referral campaign
COALITION_REFERRAL_QUALIFYING_POINTS  the points an earn needs to qualify a referral

Light to import (no SQLAlchemy, gRPC or cryptography): `coalition --help` loads it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from coalition.programme.config import (
    REFERRAL_BONUS_POINTS_MAX,
    REFERRAL_DEFAULTS,
    REFERRAL_QUALIFYING_POINTS_DEFAULT,
    ReferralDefaults,
)
from coalition.settlement.key_files import SIGNING_KEY_ENVIRONMENT_VARIABLE

DATABASE_URL_ENVIRONMENT_VARIABLE = "COALITION_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///coalition.db"
PROGRAMME_DIRECTORY_ENVIRONMENT_VARIABLE = "COALITION_PROGRAMME_DIR"
SECRET_ENVIRONMENT_VARIABLE = "COALITION_IDENTITY_SECRET"
SECRET_FILE_ENVIRONMENT_VARIABLE = "COALITION_IDENTITY_SECRET_FILE"
REFERRAL_BONUS_POINTS_ENVIRONMENT_VARIABLE = "COALITION_REFERRAL_BONUS_POINTS"
REFERRAL_QUALIFYING_POINTS_ENVIRONMENT_VARIABLE = "COALITION_REFERRAL_QUALIFYING_POINTS"
DEFAULT_LISTEN = "127.0.0.1:50051"


class SettingsError(RuntimeError):
    """An option or variable is invalid; the message names it."""


@dataclass(frozen=True)
class RateLimit:
    requests_per_second: float
    burst_requests: int

    def __post_init__(self) -> None:
        if self.requests_per_second <= 0 or self.burst_requests < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")


@dataclass(frozen=True)
class TlsFiles:
    """Mutual TLS: the hub's certificate and key, and the CA its clients' certificates need
    (paths; every hub process reads the files when it starts: api/tls.py)."""

    certificate_path: Path
    private_key_path: Path
    client_ca_path: Path


@dataclass(frozen=True)
class IdentitySecretSource:
    """Where the identity secret comes from (identity/secret.py): the hex itself, or a file;
    neither: a SQLite ledger's generated file, and a PostgreSQL hub accepts no identifiers."""

    secret_hex: str | None = field(default=None, repr=False)
    secret_file: Path | None = None


@dataclass(frozen=True)
class Observability:
    log_format: str = "text"  # or "json"
    access_log: bool = False
    metrics_listen: str | None = None  # HOST:PORT; worker i takes the first free port from it


@dataclass(frozen=True)
class GroupCommit:
    """How each hub process gathers concurrent earns and burns into one transaction
    (operations/group_commit.py): at most `size_max` calls, and a window of `window_ms` after
    a call is queued for others to join it (0: none; a lone call never waits)."""

    window_ms: float = 0.0
    size_max: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.window_ms <= GROUP_WINDOW_MS_MAX:
            raise ValueError(f"the window is 0 to {GROUP_WINDOW_MS_MAX:g} ms")
        if not 1 <= self.size_max <= GROUP_SIZE_MAX_BOUND:
            raise ValueError(f"a group holds 1 to {GROUP_SIZE_MAX_BOUND} calls")


# A window longer than this is a latency bug; a group larger than a batch is refused by the
# batch's own bound (operations/batch_earn.py BATCH_EARN_ITEMS_MAX, asserted in api/bounds.py).
GROUP_WINDOW_MS_MAX = 100.0
GROUP_SIZE_MAX_BOUND = 1000

NO_IDENTITY_SECRET = IdentitySecretSource()
DEFAULT_OBSERVABILITY = Observability()
DEFAULT_GROUP_COMMIT = GroupCommit()


@dataclass(frozen=True)
class Settings:
    """What a command (and each of `serve`'s workers) is configured with. The serve-only
    fields keep their defaults for the other commands."""

    database_url_given: str | None  # the option, else the variable; None: the command's default
    signing_key_path: Path | None  # the option, else the variable; None: the default file
    programme_directory: Path | None
    identity_secret: IdentitySecretSource = NO_IDENTITY_SECRET
    referral: ReferralDefaults = REFERRAL_DEFAULTS
    listen: str = DEFAULT_LISTEN
    workers: int = 1
    tls: TlsFiles | None = None
    rate_limit: RateLimit | None = None
    observability: Observability = DEFAULT_OBSERVABILITY
    group_commit: GroupCommit = DEFAULT_GROUP_COMMIT
    # NAME -> seconds of every scheduled job (`serve --jobs`); None: this hub runs no jobs.
    job_intervals: Mapping[str, int] | None = None

    @property
    def database_url(self) -> str:
        return self.database_url_given or DEFAULT_DATABASE_URL


def settings_from(arguments: argparse.Namespace, environment: Mapping[str, str]) -> Settings:
    """The settings of the command `arguments` parsed, with `environment` (os.environ) under
    its options; SettingsError names what is wrong. `serve --jobs`'s intervals are checked
    and added by the command, which knows the jobs (`job_intervals`)."""

    def option(name: str) -> str | None:
        value = getattr(arguments, name, None)
        return None if value is None else str(value)

    programme = option("programme") or environment.get(PROGRAMME_DIRECTORY_ENVIRONMENT_VARIABLE)
    signing_key = option("signing_key") or environment.get(SIGNING_KEY_ENVIRONMENT_VARIABLE)
    settings = Settings(
        database_url_given=option("database_url")
        or environment.get(DATABASE_URL_ENVIRONMENT_VARIABLE),
        signing_key_path=Path(signing_key) if signing_key else None,
        programme_directory=Path(programme) if programme else None,
        identity_secret=identity_secret_from(environment),
        referral=_referral_defaults(environment),
    )
    if arguments.command != "serve":
        return settings
    return _serve_settings(arguments, settings)


def identity_secret_from(environment: Mapping[str, str]) -> IdentitySecretSource:
    secret_file = environment.get(SECRET_FILE_ENVIRONMENT_VARIABLE)
    return IdentitySecretSource(
        environment.get(SECRET_ENVIRONMENT_VARIABLE), Path(secret_file) if secret_file else None
    )


def _referral_defaults(environment: Mapping[str, str]) -> ReferralDefaults:
    bonus = _integer(environment, REFERRAL_BONUS_POINTS_ENVIRONMENT_VARIABLE)
    qualifying = _integer(environment, REFERRAL_QUALIFYING_POINTS_ENVIRONMENT_VARIABLE)
    defaults = REFERRAL_DEFAULTS
    if bonus is not None and not 0 <= bonus <= REFERRAL_BONUS_POINTS_MAX:
        raise SettingsError(
            f"{REFERRAL_BONUS_POINTS_ENVIRONMENT_VARIABLE} must be from 0 to "
            f"{REFERRAL_BONUS_POINTS_MAX:,}"
        )
    if qualifying is not None and qualifying < REFERRAL_QUALIFYING_POINTS_DEFAULT:
        raise SettingsError(
            f"{REFERRAL_QUALIFYING_POINTS_ENVIRONMENT_VARIABLE} must be at least "
            f"{REFERRAL_QUALIFYING_POINTS_DEFAULT}"
        )
    return ReferralDefaults(
        defaults.bonus_points if bonus is None else bonus,
        defaults.qualifying_points_min if qualifying is None else qualifying,
    )


def _integer(environment: Mapping[str, str], name: str) -> int | None:
    text = environment.get(name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {text!r}") from None


def _serve_settings(arguments: argparse.Namespace, settings: Settings) -> Settings:
    if arguments.workers < 1:
        raise SettingsError("--workers must be at least 1")
    if arguments.job_interval and not arguments.jobs:
        raise SettingsError("--job-interval needs --jobs")
    rate_limit = None
    if arguments.rate_limit is not None:
        try:
            rate_limit = RateLimit(
                arguments.rate_limit,
                arguments.rate_limit_burst or max(1, int(arguments.rate_limit)),
            )
        except ValueError as error:
            raise SettingsError(f"--rate-limit: {error}") from None
    try:
        group_commit = GroupCommit(arguments.group_window_ms, arguments.group_size_max)
    except ValueError as error:
        raise SettingsError(f"--group-window-ms / --group-size-max: {error}") from None
    return Settings(
        database_url_given=settings.database_url_given,
        signing_key_path=settings.signing_key_path,
        programme_directory=settings.programme_directory,
        identity_secret=settings.identity_secret,
        referral=settings.referral,
        listen=arguments.listen,
        workers=arguments.workers,
        tls=tls_files(arguments.tls_cert, arguments.tls_key, arguments.client_ca),
        rate_limit=rate_limit,
        observability=Observability(
            arguments.log_format, arguments.access_log, arguments.metrics_listen
        ),
        group_commit=group_commit,
    )


def tls_files(
    certificate: str | None, private_key: str | None, client_ca: str | None
) -> TlsFiles | None:
    """All three paths, or none of them (plaintext); anything in between is refused."""
    given = [certificate, private_key, client_ca]
    if not any(given):
        return None
    if not all(given):
        raise SettingsError("--tls-cert, --tls-key and --client-ca go together (mutual TLS)")
    files = TlsFiles(Path(certificate or ""), Path(private_key or ""), Path(client_ca or ""))
    for path in (files.certificate_path, files.private_key_path, files.client_ca_path):
        if not path.is_file():
            raise SettingsError(f"TLS file not found: {path}")
    return files
