"""Target patterns resolved by ansible-core's own inventory code, on inventories in tmp_path."""

from __future__ import annotations

import os
import textwrap
import threading
from pathlib import Path

import pytest

from executor.actions.inventory import AnsibleInventory, InventoryError, check_pattern
from executor.errors import RunbookError

INI = """\
[web]
web[1:3] ansible_host=127.0.0.1

[eu]
web1
web2
db1

[db]
db1 ansible_host=10.0.0.5 ansible_port=2222 ansible_user=rb-db1 app_port=8080

[lb]
lb1 ansible_port=2200

[app:children]
web
db

[app:vars]
ansible_user=rb-app
app_port=8000

[sandbox:children]
app
lb
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def inventory(tmp_path: Path) -> AnsibleInventory:
    return AnsibleInventory(write(tmp_path / "hosts.ini", INI))


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("web", ["web1", "web2", "web3"]),  # a group whose hosts come from a range
        ("web2", ["web2"]),
        ("app", ["web1", "web2", "web3", "db1"]),  # children
        ("web:&eu", ["web1", "web2"]),  # intersection
        ("web:&eu:!web1", ["web2"]),  # intersection and exclusion
        ("app:!db", ["web1", "web2", "web3"]),
        ("web:db", ["web1", "web2", "web3", "db1"]),  # union
        ("db1,web2", ["db1", "web2"]),
        ("db1, web2", ["db1", "web2"]),
        ("web[0:1]", ["web1", "web2"]),  # subscripts
        ("web[-1]", ["web3"]),
        ("web[1:]", ["web2", "web3"]),
        ("web*", ["web1", "web2", "web3"]),  # wildcards
        ("w?b2", ["web2"]),
        ("nothing", []),
        ("web:&db", []),
        ("web[7:9]", []),
    ],
)
def test_patterns_resolve_as_in_ansible(
    inventory: AnsibleInventory, pattern: str, hosts: list[str]
) -> None:
    assert inventory.resolve(pattern) == hosts


def test_all_and_star_list_every_host(inventory: AnsibleInventory) -> None:
    expected = {"web1", "web2", "web3", "db1", "lb1"}
    assert set(inventory.resolve("all")) == expected
    assert set(inventory.resolve("*")) == expected
    assert set(inventory.hosts()) == expected
    assert set(inventory.resolve("sandbox")) == expected  # grandchildren


def test_implicit_localhost_is_never_a_target(inventory: AnsibleInventory, tmp_path: Path) -> None:
    assert inventory.resolve("localhost") == []
    assert inventory.resolve("127.0.0.1") == []
    explicit = AnsibleInventory(write(tmp_path / "local.ini", "[local]\nlocalhost\n"))
    assert explicit.resolve("localhost") == ["localhost"]


def test_host_vars_merge_group_then_host_as_plain_values(inventory: AnsibleInventory) -> None:
    db1 = inventory.host_vars("db1")
    assert db1["ansible_host"] == "10.0.0.5"
    assert db1["ansible_port"] == 2222
    assert db1["ansible_user"] == "rb-db1"  # the host's own var beats app:vars
    assert db1["app_port"] == 8080
    assert sorted(db1["group_names"]) == ["app", "db", "eu", "sandbox"]
    web2 = inventory.host_vars("web2")
    assert web2["ansible_user"] == "rb-app" and web2["app_port"] == 8000  # from app:vars
    assert "ansible_port" not in web2
    # ansible 2.19 tags its values (str/int subclasses); the adapters get plain ones
    assert type(db1["ansible_host"]) is str and type(db1["ansible_port"]) is int
    with pytest.raises(InventoryError, match="no host 'web9' in the inventory"):
        inventory.host_vars("web9")
    with pytest.raises(InventoryError, match="no host 'localhost'"):
        inventory.host_vars("localhost")


def test_yaml_inventory_with_group_vars_directory(tmp_path: Path) -> None:
    path = write(
        tmp_path / "inventory.yml",
        """\
        all:
          children:
            sandbox:
              vars: {ansible_connection: ssh}
              children:
                web:
                  hosts:
                    web1: {ansible_port: 2201}
                    web2: {ansible_port: 2202}
                db:
                  hosts:
                    db1: {ansible_port: 2203}
        """,
    )
    (tmp_path / "group_vars").mkdir()
    write(tmp_path / "group_vars" / "web.yml", "app_port: 9000\n")
    inventory = AnsibleInventory(path)
    assert inventory.resolve("sandbox:!db") == ["web1", "web2"]
    assert inventory.host_vars("web1")["app_port"] == 9000
    assert inventory.host_vars("web1")["ansible_connection"] == "ssh"
    assert "app_port" not in inventory.host_vars("db1")


def test_an_inventory_directory_is_one_inventory(tmp_path: Path) -> None:
    directory = tmp_path / "inventory"
    directory.mkdir()
    write(directory / "a.ini", "[web]\nweb1\n")
    write(directory / "b.ini", "[web]\nweb2\n[db]\ndb1\n")
    assert AnsibleInventory(directory).resolve("web") == ["web1", "web2"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("web1; rm -rf /", r"outside Ansible's host pattern language: ' ' ';'|';'"),
        ("$(id)", "outside Ansible's host pattern language"),
        ("`id`", "outside Ansible's host pattern language"),
        ("{{ inputs.host }}", "outside Ansible's host pattern language"),
        ("web1'", "outside Ansible's host pattern language"),
        ("web1\ndb1", "outside Ansible's host pattern language"),
        ("web1|db1", "outside Ansible's host pattern language"),
        ("../etc/passwd", "outside Ansible's host pattern language"),
        ("@limitfile", "outside Ansible's host pattern language"),
        ("web[x]", r"'\[' or '\]' outside a \[n\] or \[n:m\]"),
        ("web]", r"'\[' or '\]' outside"),
        ("~web[12]", "regular expression"),
        ("web:~db.*", "regular expression"),
        ("", "empty"),
        ("   ", "empty"),
        ("web," * 400, "characters long"),
    ],
)
def test_patterns_outside_the_language_are_refused(
    inventory: AnsibleInventory, pattern: str, message: str
) -> None:
    with pytest.raises(InventoryError, match=message) as info:
        inventory.resolve(pattern)
    assert isinstance(info.value, RunbookError) and info.value.hint


def test_check_pattern_returns_the_stripped_pattern() -> None:
    assert check_pattern("  web:&eu:!web3 ") == "web:&eu:!web3"
    assert check_pattern("web[0:1],db1") == "web[0:1],db1"


def test_a_missing_inventory_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ini"
    with pytest.raises(InventoryError, match=f"the inventory {missing} does not exist"):
        AnsibleInventory(missing).resolve("web")


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("broken.ini", "[web\nweb1\n", "ini plugin"),
        ("broken.yml", "all:\n  hosts: [web1, \n", "yaml plugin"),
    ],
)
def test_an_invalid_inventory_names_the_file_and_the_reason(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], name: str, text: str, reason: str
) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(InventoryError, match="ansible-core cannot parse the inventory") as info:
        AnsibleInventory(path).resolve("web")
    assert str(path) in str(info.value) and reason in str(info.value)
    assert f"ansible-inventory -i {path} --list" in str(info.value)
    assert "WARNING" not in capfd.readouterr().err  # ansible's warnings were captured


def test_an_unmatched_pattern_prints_no_ansible_warning(
    inventory: AnsibleInventory, capfd: pytest.CaptureFixture[str]
) -> None:
    assert inventory.resolve("web9") == []
    assert "Could not match" not in capfd.readouterr().err


def test_the_inventory_is_built_once_and_again_when_the_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.ini", "[web]\nweb1\n")
    inventory = AnsibleInventory(path)
    assert inventory.resolve("web") == ["web1"]
    first = inventory._manager
    assert inventory.resolve("all") == ["web1"]
    assert inventory._manager is first  # cached
    write(path, "[web]\nweb1\nweb2\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert inventory.resolve("web") == ["web1", "web2"]
    assert inventory._manager is not first


def test_concurrent_resolves_agree(inventory: AnsibleInventory) -> None:
    patterns = {"web:&eu": ["web1", "web2"], "app:!web": ["db1"], "lb": ["lb1"]}
    results: list[tuple[str, list[str]]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(30):
                for pattern in patterns:
                    results.append((pattern, inventory.resolve(pattern)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 8 * 30 * 3
    assert all(hosts == patterns[pattern] for pattern, hosts in results)
