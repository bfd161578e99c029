"""The catalog: versions, newest resolution, conflicts and the lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from executor.catalog import Catalog, check_file, resolve_ref, semver_key
from executor.errors import NotFound, ValidationFailed

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata:
  name: {name}
  version: {version}
  owner: team-sre
policy:
  automation: {automation}
steps:
  - id: hello
    log: {{message: "{message}"}}
"""


def write(
    folder: Path,
    filename: str,
    *,
    name: str = "demo",
    version: str = "1.0.0",
    automation: str = "manual",
    message: str = "hi",
) -> Path:
    path = folder / filename
    path.write_text(
        RUNBOOK.format(name=name, version=version, automation=automation, message=message),
        encoding="utf-8",
    )
    return path


def test_semver_ordering_puts_prereleases_before_releases() -> None:
    versions = ["1.10.0", "1.2.0", "1.2.0-rc.1", "1.2.0-rc.10", "1.2.0-rc.2", "0.9.9", "junk"]
    assert sorted(versions, key=semver_key) == [
        "junk",
        "0.9.9",
        "1.2.0-rc.1",
        "1.2.0-rc.2",
        "1.2.0-rc.10",
        "1.2.0",
        "1.10.0",
    ]


def test_name_resolves_to_newest_and_name_at_version_to_that_one(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", version="1.2.0", message="old")
    write(tmp_path, "b.yaml", version="1.10.0", message="new")
    write(tmp_path, "c.yaml", version="1.9.0-rc.1", message="rc")
    catalog = Catalog.load(tmp_path)
    assert catalog.versions("demo") == ["1.2.0", "1.9.0-rc.1", "1.10.0"]
    assert catalog.resolve("demo").version == "1.10.0"
    assert catalog.resolve("demo@1.2.0").steps[0].action.message == "old"  # type: ignore[union-attr]


def test_unknown_names_and_versions_say_what_exists(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", name="disk-pressure")
    catalog = Catalog.load(tmp_path)
    with pytest.raises(NotFound, match="did you mean 'disk-pressure'"):
        catalog.resolve("disk-presure")
    with pytest.raises(NotFound, match=r"versions: 1\.0\.0"):
        catalog.resolve("disk-pressure@2.0.0")


def test_same_name_and_version_with_different_content_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", message="one")
    write(tmp_path, "b.yaml", message="two")
    issues = Catalog.load(tmp_path).catalog_issues()
    assert [i.code for i in issues] == ["duplicate-version"]
    assert issues[0].path.endswith("b.yaml") and issues[0].line == 5
    assert "demo@1.0.0 is also defined in" in issues[0].message


def test_identical_copies_are_not_a_conflict(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml")
    write(tmp_path, "b.yaml")
    assert Catalog.load(tmp_path).catalog_issues() == []


def test_playbooks_and_other_yaml_are_not_runbooks(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml")
    (tmp_path / "play.yml").write_text("- hosts: all\n  tasks: []\n", encoding="utf-8")
    catalog = Catalog.load(tmp_path)
    assert [e.path.name for e in catalog.entries] == ["a.yaml"]


def test_lock_records_hashes_and_refuses_an_edit_without_a_bump(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml")
    catalog = Catalog.load(tmp_path)
    assert catalog.lock_all() == ["demo@1.0.0"]
    locked = json.loads((tmp_path / "catalog.lock").read_text())
    assert locked["runbooks"]["demo@1.0.0"]["sha256"] == catalog.resolve("demo").sha256
    write(tmp_path, "a.yaml", message="edited")
    issues = Catalog.load(tmp_path).catalog_issues()
    assert [i.code for i in issues] == ["locked-version-changed"]
    assert "bump metadata.version" in issues[0].message
    assert [i.code for i in check_file(path).issues] == ["locked-version-changed"]
    with pytest.raises(ValidationFailed):
        resolve_ref(str(path), tmp_path)
    # a bumped version is a new publication and is fine
    write(tmp_path, "a.yaml", version="1.0.1", message="edited")
    assert Catalog.load(tmp_path).catalog_issues() == []


def test_lock_file_that_is_damaged_says_how_to_recover(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml")
    (tmp_path / "catalog.lock").write_text("{not json", encoding="utf-8")
    with pytest.raises(Exception, match="cannot read the catalog lock"):
        Catalog.load(tmp_path)


def test_resolve_ref_accepts_a_path(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", version="3.1.4")
    assert resolve_ref(str(path), tmp_path / "elsewhere").version == "3.1.4"
    with pytest.raises(NotFound):
        resolve_ref(str(tmp_path / "missing.yaml"), tmp_path)


def test_missing_catalog_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="RUNBOOK_CATALOG"):
        Catalog.load(tmp_path / "nope")
