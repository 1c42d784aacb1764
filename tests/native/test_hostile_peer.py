"""A garbage record cannot crash a C peer: every hostile record of wire_corpus.json, sent
to the C kit as a request and as a reply, ends the link (calls fail with
OH_IPC_DEAD_REMOTE_OBJECT) and leaks no fd; valid ones keep it open; seeded mutations
run through it too (hostile_peer.c; test_sanitizers.py runs it under ASan/UBSan)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from native_build import KIT_INTERNAL_FLAGS, KIT_SOURCES, Build

CORPUS = json.loads((Path(__file__).parent / "wire_corpus.json").read_text())
DEAD = 1901005


def corpus_input() -> str:
    """The records as hostile_peer.c reads them: "HEX N_FDS" lines."""
    return "".join(f"{e['record']} {e['n_fds']}\n" for e in CORPUS)


def check_outcomes(stdout: str) -> None:
    lines = stdout.splitlines()
    for entry, line in zip(CORPUS, lines, strict=False):
        serve, reply = line.split()
        if entry["frames"] is None:
            # A record over the kit's buffer goes out only with a bigger send buffer
            # (SO_SNDBUFFORCE, root); then the kit sees it truncated and closes.
            assert serve == "closed" or (serve == "unsent" and len(entry["record"]) > 2 * 262144
                                         ), entry["name"]
            assert int(reply) == DEAD, entry["name"]
        else:
            assert serve in ("open", "closed"), entry["name"]  # a valid record may be
            # refused by the serve side (a reply there, a second hello): never "hung"
    assert len(lines) >= len(CORPUS)


def test_hostile_records_end_the_link_only(cc: Build) -> None:
    exe = cc("hostile_peer", ["hostile_peer.c", *KIT_SOURCES], kit=False,
             flags=KIT_INTERNAL_FLAGS)
    result = subprocess.run([str(exe), "300"], input=corpus_input(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    check_outcomes(result.stdout)
    assert "fuzz 300" in result.stdout
    plain = next(i for i, e in enumerate(CORPUS) if e["name"] == "plain request")
    assert result.stdout.splitlines()[plain].split()[0] == "open"


# A status no childkit peer sends (outside 0, IPCKit's codes, CK_IPC_TIMEOUT and the user
# range) reaches the C caller as OH_IPC_INVALID_USER_ERROR_CODE; the others unchanged.
# A plain reply, and an error reply with a detail text.
INVALID = 1901006
PEER_STATUSES = {12345: INVALID, -1: INVALID, 1901008: INVALID, 1901899: INVALID,
                 1901999: INVALID, 1902000: INVALID, 1908999: INVALID, 1910000: INVALID,
                 1901000: 1901000, 1901007: 1901007, 1901900: 1901900, 1909000: 1909000,
                 1909999: 1909999}


def test_a_peer_s_status_outside_the_transportable_codes_is_clamped(cc: Build) -> None:
    exe = cc("hostile_peer", ["hostile_peer.c", *KIT_SOURCES], kit=False,
             flags=KIT_INTERNAL_FLAGS)
    result = subprocess.run([str(exe), "status", *map(str, PEER_STATUSES)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    got = [tuple(map(int, line.split())) for line in result.stdout.splitlines()]
    assert got == [(want, want) for want in PEER_STATUSES.values()]


def test_a_peer_s_references_and_releases_are_bounded(cc: Build) -> None:
    # Releases waiting for a reply: all a peer holds may wait, one more ends the link at
    # once (not when the reply comes); 16,384 may wait, one more ends it; 65,536 live
    # remotes from one peer, one more ends it. The call in flight then fails DEAD.
    exe = cc("hostile_peer", ["hostile_peer.c", *KIT_SOURCES], kit=False,
             flags=KIT_INTERNAL_FLAGS)
    result = subprocess.run([str(exe), "objects"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"open closed {DEAD}", f"open closed {DEAD}",
                                          "open closed"]
