"""The webhook's own HTTPS server: its thread, its certificate reloads, its answers (in-process,
on 127.0.0.1; no API server needed)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kafka_sidecar_localenv.processes import free_port
from kafka_sidecar_operator.certificates import KeyPair
from kafka_sidecar_operator.webhook import admission_response, local_certificates
from kafka_sidecar_operator.webhook_server import WebhookServer

pytestmark = pytest.mark.integration


def echo(handler_id: str, review: dict[str, Any]) -> dict[str, Any]:
    return admission_response(review, [], [handler_id])


@pytest.fixture
def pairs(tmp_path: Path) -> list[KeyPair]:
    """Two serving pairs of two CAs, and the files the server serves (a copy of the first)."""
    first, _ = local_certificates(tmp_path / "a")
    second, _ = local_certificates(tmp_path / "b")
    served = KeyPair(tmp_path / "tls.crt", tmp_path / "tls.key")
    served.cert.write_bytes(first.cert.read_bytes())
    served.key.write_bytes(first.key.read_bytes())
    return [first, second, served]


@pytest.fixture
def server(pairs: list[KeyPair]) -> Iterator[WebhookServer]:
    served = pairs[2]
    running = WebhookServer(
        "127.0.0.1",
        free_port(),
        served.cert,
        served.key,
        echo,
        handler_ids=("inject-sidecar", "keep-record"),
        check_seconds=0.2,
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def served_certificate(port: int) -> str:
    """The PEM certificate a new connection to 127.0.0.1 is served (no SNI, as by IP)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der)


def post(port: int, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u"}}


def test_each_handler_answers_at_its_own_path_and_anything_else_is_refused(
    server: WebhookServer,
) -> None:
    for handler_id in ("inject-sidecar", "keep-record"):
        status, answer = post(server.port, f"/{handler_id}", json.dumps(REVIEW).encode())
        assert status == 200
        assert answer["response"] == {"uid": "u", "allowed": True, "warnings": [handler_id]}
    assert post(server.port, "/other", json.dumps(REVIEW).encode())[0] == 404
    assert post(server.port, "/inject-sidecar", b"{not json")[0] == 400


def test_renewed_certificate_files_are_served_to_new_connections_without_a_restart(
    server: WebhookServer, pairs: list[KeyPair]
) -> None:
    first, second, served = pairs
    assert served_certificate(server.port) == first.cert.read_text()
    # A half-written renewal (the new certificate, the old key) is not served ...
    served.cert.write_bytes(second.cert.read_bytes())
    time.sleep(0.6)
    assert served_certificate(server.port) == first.cert.read_text()
    # ... the whole of it is, on the same listening socket.
    served.key.write_bytes(second.key.read_bytes())
    deadline = time.monotonic() + 10
    while served_certificate(server.port) != second.cert.read_text():
        assert time.monotonic() < deadline, "the renewed certificate was never served"
        time.sleep(0.1)
    assert post(server.port, "/inject-sidecar", json.dumps(REVIEW).encode())[0] == 200


def test_it_answers_while_the_event_loop_that_started_it_is_blocked(
    pairs: list[KeyPair],
) -> None:
    """The operator starts the server from kopf's loop; answers never need that loop."""
    served = pairs[2]
    answers: list[float] = []

    async def blocked_loop() -> None:
        webhook = WebhookServer(
            "127.0.0.1", free_port(), served.cert, served.key, echo, ("inject-sidecar",)
        )
        await asyncio.to_thread(webhook.start)

        def client() -> None:
            started = time.monotonic()
            status, _ = post(webhook.port, "/inject-sidecar", json.dumps(REVIEW).encode())
            assert status == 200
            answers.append(time.monotonic() - started)

        caller = threading.Thread(target=client)
        caller.start()
        time.sleep(5)  # blocks this loop: nothing else on it runs meanwhile
        answered_while_blocked = list(answers)
        caller.join()
        await asyncio.to_thread(webhook.stop)
        assert answered_while_blocked, "answered only once the loop was free"

    asyncio.run(blocked_loop())
    assert answers[0] < 2.5, answers


def test_stop_closes_the_port_and_a_taken_port_fails_start(pairs: list[KeyPair]) -> None:
    served = pairs[2]
    port = free_port()
    first = WebhookServer("127.0.0.1", port, served.cert, served.key, echo, ("inject-sidecar",))
    first.start()
    second = WebhookServer("127.0.0.1", port, served.cert, served.key, echo, ("inject-sidecar",))
    with pytest.raises(RuntimeError, match="could not start"):
        second.start()
    first.stop()
    with pytest.raises(OSError):  # noqa: PT011 - refused, in whichever subclass
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_stopping_server_closes_keep_alive_connections_by_answering_not_under_the_client(
    server: WebhookServer,
) -> None:
    """kube-apiserver reuses idle connections; one closed under it fails the call open (a pod
    admitted without its decision). While draining, every answer says ``Connection: close``."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    body = json.dumps({"request": {"uid": "u1", "object": {"metadata": {}}}}).encode()
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    try:
        connection.request("POST", "/inject-sidecar", body, {"Content-Type": "application/json"})
        first = connection.getresponse()
        first.read()
        assert first.status == 200
        assert first.getheader("Connection", "").lower() != "close", "kept alive while serving"
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        time.sleep(0.5)  # the stop has begun; the idle connection is still open
        connection.request("POST", "/inject-sidecar", body, {"Content-Type": "application/json"})
        second = connection.getresponse()
        second.read()
        assert second.status == 200, "answered on the idle connection, not closed under it"
        assert second.getheader("Connection", "").lower() == "close"
        stopping.join(30)
    finally:
        connection.close()
