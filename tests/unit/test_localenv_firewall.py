"""The node's iptables clean-up removes exactly the KUBE-* chains it added, and the jumps to them."""

from __future__ import annotations

from kafka_sidecar_localenv.firewall import parse_chains, removal_commands

SAVED = """*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*filter
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-OLD - [0:0]
:USER-CHAIN - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -m comment --comment "kept: someone else's" -j KUBE-OLD
-A OUTPUT -j USER-CHAIN
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -j DROP
COMMIT
""".splitlines()


def test_chains_are_read_per_table() -> None:
    assert parse_chains(SAVED) == {
        "mangle/KUBE-KUBELET-CANARY",
        "filter/KUBE-FIREWALL",
        "filter/KUBE-OLD",
    }


def test_only_new_chains_and_the_rules_jumping_to_them_are_removed() -> None:
    commands = removal_commands(SAVED, keep={"filter/KUBE-OLD"})
    assert commands == [
        ["-t", "filter", "-D", "INPUT", "-j", "KUBE-FIREWALL"],
        ["-t", "filter", "-F", "KUBE-FIREWALL"],
        ["-t", "mangle", "-F", "KUBE-KUBELET-CANARY"],
        ["-t", "filter", "-X", "KUBE-FIREWALL"],
        ["-t", "mangle", "-X", "KUBE-KUBELET-CANARY"],
    ]


def test_nothing_is_removed_when_nothing_was_added() -> None:
    assert removal_commands(SAVED, keep=parse_chains(SAVED)) == []
