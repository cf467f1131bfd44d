"""The fleet configuration: defaults, durations, paths, and errors that name the file, line and field."""

from __future__ import annotations

import re
import traceback
from datetime import timedelta
from pathlib import Path

import pytest

from vulnattest.config import format_duration, load_config, parse_config, parse_duration
from vulnattest.errors import ConfigError

FULL = """\
images:                       # many; tags or digests
  - 127.0.0.1:5000/demo/app:1
  - 127.0.0.1:5000/demo/api@sha256:{digest}
registries:
  127.0.0.1:5000: {{insecure: true}}
scanner:
  trivy: {{cache_dir: /var/cache/trivy, offline: true, ignore_unfixed: true, timeout: 10m}}
store:
  url: file:///var/lib/vulnattest
signing:
  key: keys/vulnattest.key
concurrency: 4
""".format(digest="b" * 64)


def test_the_documented_example_loads(tmp_path: Path):
    path = tmp_path / "fleet.yaml"
    path.write_text(FULL)
    config = load_config(path)
    assert [str(r) for r in config.image_refs()] == [
        "127.0.0.1:5000/demo/app:1", "127.0.0.1:5000/demo/api@sha256:" + "b" * 64,
    ]
    assert config.insecure_registries() == {"127.0.0.1:5000"}
    assert config.scanner.trivy.timeout == timedelta(minutes=10)
    assert config.scanner.trivy.ignore_unfixed
    assert config.scanner.trivy.offline
    assert config.store.url == "file:///var/lib/vulnattest"
    assert config.signing.key == tmp_path / "keys" / "vulnattest.key"  # relative to the config file
    assert config.signing.trusted_public_keys() == (tmp_path / "keys" / "vulnattest.pub",)


def test_an_almost_empty_file_works_with_defaults(tmp_path: Path):
    config = parse_config("images: [alpine]\n", base=tmp_path)
    assert config.store.url == (tmp_path / "vulnattest-reports").as_uri()
    assert config.scanner.trivy.path == "trivy"
    assert config.concurrency == 4
    assert config.freshness.max_age == timedelta(hours=168)
    assert parse_config("", base=tmp_path).images == ()


def test_duplicate_images_are_scanned_once():
    config = parse_config("images: [alpine, docker.io/library/alpine:latest, alpine:3]\n")
    assert [str(r) for r in config.image_refs()] == ["docker.io/library/alpine:latest", "docker.io/library/alpine:3"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("images:\n  - ok/x\n  - BAD/Ref\n", "fleet.yaml:3: images.1: invalid image reference 'BAD/Ref'"),
        ("scanner:\n  trivy:\n    timeout: 10x\n", "fleet.yaml:3: scanner.trivy.timeout: invalid duration '10x'"),
        ("concurrency: 0\n", "fleet.yaml:1: concurrency: Input should be greater than or equal to 1"),
        ("images: []\nstorr: {}\n", "fleet.yaml:2: storr: unknown key"),
        ("store:\n  url: ftp://x/y\n", "fleet.yaml:2: store.url: unsupported store URL 'ftp://x/y'"),
        ("images: [a\n", "fleet.yaml:2: not valid YAML"),
        ("- just\n- a list\n", "fleet.yaml:1: the config must be a mapping"),
        ("images: []\nalerts:\n  - webhook: https://h.example/a\n  - webhook: https://h.example/a\n",
         "fleet.yaml:2: alerts: alerts[1] is the same channel as alerts[0]"),
        ("alerts:\n  - {webhook: https://h.example/a, name: oncall}\n  - {prefect_block: slack, name: oncall}\n",
         "fleet.yaml:1: alerts: alerts[1] is the same channel as alerts[0] (same name"),
        ("alerts:\n  - {prefect_block: slack}\n  - {webhook: https://h.example/a, name: prefect-block:slack}\n",
         "fleet.yaml:1: alerts: alerts[1] is the same channel as alerts[0]"),  # both go by prefect-block:slack
    ],
)
def test_errors_name_file_line_field_and_what_is_expected(text: str, expected: str):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="fleet.yaml")
    assert expected in str(caught.value)


@pytest.mark.parametrize("text", [
    "alerts:\n  - webhook: hooks.example.com/services/T0/B0/s3cr3tT0ken\n",  # no scheme: invalid
    "alerts:\n  - webhook: https://s3cr3tT0ken@hooks.example.com/x: [\n",  # invalid YAML
])
def test_a_config_error_never_carries_the_line_it_rejects(text: str):
    # a failed flow run's log shows the whole exception chain: none of it may quote a webhook token
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="fleet.yaml")
    assert "fleet.yaml:" in str(caught.value)
    assert "s3cr3tT0ken" not in "".join(traceback.format_exception(caught.value))


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"cannot read config .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("168h", 604800), ("1h30m", 5400), ("7d", 604800), (45, 45), ("1.5h", 5400)],
)
def test_durations(text: object, seconds: int):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "10", "1x", "1h 2q", "-1h"])
def test_bad_durations(text: str):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_go_style_duration_format():
    assert format_duration(timedelta(hours=170, minutes=3, seconds=2)) == "170h3m2s"
    assert format_duration(timedelta(seconds=59)) == "59s"
    assert format_duration(timedelta(minutes=2)) == "2m0s"


def test_every_alert_channel_is_known_by_its_configured_name():
    from tasks.freshness import alert_channels

    config = parse_config("alerts:\n  - {webhook: https://h.example/a, name: slack}\n"
                          "  - {prefect_block: slack, name: oncall}\n  - {prefect_block: slack}\n")
    channels = alert_channels(config.alerts, config.freshness.remind_every)
    assert [c.id for c in channels] == ["slack", "oncall", "prefect-block:slack"]


def test_identity_regexps_are_matched_as_go_matches_them():
    from vulnattest.text import go_search

    pattern = r"^https://github\.com/acme/.+@refs/heads/main$"
    assert go_search(pattern, "https://github.com/acme/ci.yml@refs/heads/main")
    assert not go_search(pattern, "https://github.com/acme/ci.yml@refs/heads/main\n")  # Python's $ would match
    assert go_search(r"@refs/heads/main\z", "x@refs/heads/main")  # Go's end of text; a compile error in Python
    config = parse_config("signing:\n  key: keyless\n  identities:\n"
                          "    - {subject_regexp: 'main\\z', issuer: https://token.actions.githubusercontent.com}\n")
    assert config.signing.identities[0].subject_regexp == r"main\z"


BILLION_LAUGHS = "\n".join(
    [f"l0: &l0 [{', '.join(['lol'] * 10)}]"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    + ["images: *l8"]
)


def test_an_alias_bomb_is_refused_before_it_expands_with_a_short_message():
    with pytest.raises(ConfigError) as refused:
        parse_config(BILLION_LAUGHS, source="fleet.yaml")
    assert "expands to over 100000 values through YAML aliases" in str(refused.value)
    assert len(str(refused.value)) < 300


def test_an_alias_that_refers_to_itself_is_refused():
    with pytest.raises(ConfigError, match=r"fleet\.yaml:1: a YAML alias refers to the value it is in"):
        parse_config("images: &a [*a]\n", source="fleet.yaml")


def test_a_long_rejected_value_is_cut_short_in_the_error():
    with pytest.raises(ConfigError) as refused:
        parse_config(f'images: ["{"A" * 100_000}"]\n', source="fleet.yaml")
    assert "(cut short)" in str(refused.value)
    assert len(str(refused.value)) < 500


@pytest.mark.parametrize(("text", "says"), [
    ("alerts: [{webhook: 'http://hooks.example.com/T0K3N'}]",
     "the webhook on hooks.example.com is reached over plain http://"),
    ("store: {url: s3://reports, endpoint_url: 'http://minio.internal:9000'}",
     "the S3 endpoint on minio.internal is reached over plain http://"),
    ("scanner: {trivy: {server: 'http://trivy.internal:4954'}}",
     "the Trivy server on trivy.internal is reached over plain http://"),
    ("registries: {'registry.internal:5000': {insecure: true}}\nscanner: {trivy: {server: 'https://trivy.example.com'}}",
     "Trivy's --insecure would stop it checking the TLS of the Trivy server trivy.example.com too"),
])
def test_clear_text_off_this_machine_is_refused_unless_allowed(text: str, says: str):
    with pytest.raises(ConfigError, match=re.escape(says)) as refused:
        parse_config(text, source="fleet.yaml")
    assert "T0K3N" not in str(refused.value)
    if "allow_http" in str(refused.value):  # the way out it names works
        allowed = text.replace("'}", "', allow_http: true}").replace("'}}}", "', allow_http: true}}}")
        parse_config(allowed, source="fleet.yaml")


@pytest.mark.parametrize("text", [
    "alerts: [{webhook: 'http://127.0.0.1:8080/hook'}]",
    "store: {url: s3://reports, endpoint_url: 'http://localhost:9000'}",
    "scanner: {trivy: {server: 'http://[::1]:4954'}}",
    "registries: {'127.0.0.1:5000': {insecure: true}}\nscanner: {trivy: {server: 'https://127.0.0.1:4954'}}",
])
def test_clear_text_on_this_machine_is_fine(text: str):
    parse_config(text, source="fleet.yaml")


def test_sources_of_each_kind_and_their_errors_name_the_keys_of_the_file():
    config = parse_config("sources:\n  - {registry: 'r.example:5000', repositories: [team/*], newest: 2}\n"
                          "  - {kubernetes: {namespaces: [shop], kubeconfig: kube.yaml}}\n",
                          source="fleet.yaml", base=Path("/etc/vulnattest"))
    registry, cluster = config.sources
    assert registry.newest == 2  # type: ignore[union-attr]
    assert cluster.kubernetes.kubeconfig == Path("/etc/vulnattest/kube.yaml")  # type: ignore[union-attr]

    with pytest.raises(ConfigError) as refused:
        parse_config("sources:\n  - {kubernetes: {namespace: [x]}}\n  - {registry: 'h:5000'}\n"
                     "  - {registry: 'h:5000', repositories: [a], semver: 'newest please'}\n", source="fleet.yaml")
    assert str(refused.value).splitlines()[1:] == [
        "  fleet.yaml:2: sources.0.kubernetes.namespace: unknown key; see the configuration reference in README.md",
        "  fleet.yaml:3: sources.1.repositories: Field required",
        "  fleet.yaml:4: sources.2.semver: semver 'newest please' is not a version range like '>=1.4,<2'",
    ]
