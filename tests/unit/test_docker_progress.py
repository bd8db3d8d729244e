"""The engine's progress streams as a person reads them: log lines and one-line errors."""

from __future__ import annotations

import pytest

from conveyor.orchestrator.errors import StepFailed
from conveyor.providers.docker.progress import (
    OUTPUT_CAP,
    BuildLog,
    Capped,
    PushLog,
    push_failure,
    registry_of,
)

BUILD = [
    {"stream": "Step 1/2 : FROM conveyor-test/busybox"},
    {"stream": "\n"},
    {"stream": " ---> 4f6c2a9bcc74\n"},
    {"stream": "Step 2/2 : RUN exit 3"},
    {"stream": "\n"},
    {"stream": " ---> Running in 8d499e804954\n"},
]


def test_build_lines_reach_the_log_and_the_image_id_is_kept() -> None:
    # Given a successful build's messages
    lines: list[str] = []
    log = BuildLog(lines.append)
    for message in [*BUILD[:3], {"aux": {"ID": "sha256:abc"}}, {"stream": "Successfully built"}]:
        log.feed(message)
    log.finish()
    # Then every line shows, whole, and the image id is known
    assert lines == [
        "Step 1/2 : FROM conveyor-test/busybox",
        " ---> 4f6c2a9bcc74",
        "Successfully built",
    ]
    assert log.image_id == "sha256:abc"


def test_a_build_error_names_the_instruction_that_failed() -> None:
    log = BuildLog(None)
    for message in BUILD:
        log.feed(message)
    error = {"error": "The command '/bin/sh -c exit 3' returned\na non-zero code: 3"}
    with pytest.raises(StepFailed) as caught:
        log.feed(error)
    assert str(caught.value) == (
        "build failed at step 2/2 (RUN exit 3): "
        "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    )


def test_a_base_image_that_cannot_be_had_is_said_plainly() -> None:
    log = BuildLog(None)
    log.feed({"stream": "Step 1/3 : FROM example/base:1\n"})
    assert log.failure("pull access denied for example/base") == (
        "build failed at step 1/3 (FROM example/base:1): the base image is not on this "
        "engine and could not be pulled: pull access denied for example/base"
    )


def test_an_error_before_any_step_is_still_one_line() -> None:
    assert BuildLog(None).failure("dockerfile parse error\nline 1") == (
        "build failed: dockerfile parse error line 1"
    )


def test_push_progress_ticks_are_left_out_and_the_digest_is_kept() -> None:
    lines: list[str] = []
    log = PushLog("127.0.0.1:5000/app:1", lines.append)
    for message in [
        {"status": "The push refers to repository [127.0.0.1:5000/app]"},
        {"status": "Preparing", "progressDetail": {}, "id": "7ba2"},
        {"status": "Pushing", "progressDetail": {"current": 1, "total": 3}, "id": "7ba2"},
        {"status": "Pushed", "progressDetail": {}, "id": "7ba2"},
        {"status": "1: digest: sha256:ad25 size: 735"},
        {"aux": {"Tag": "1", "Digest": "sha256:ad25", "Size": 735}},
    ]:
        log.feed(message)
    assert lines == [
        "The push refers to repository [127.0.0.1:5000/app]",
        "7ba2: Pushed",
        "1: digest: sha256:ad25 size: 735",
    ]
    assert log.digest == "sha256:ad25"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            "no basic auth credentials",
            "push of 127.0.0.1:5000/app:1 was denied by 127.0.0.1:5000: no basic auth credentials",
        ),
        (
            'Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
            "the registry 127.0.0.1:5000 is unreachable: Get "
            '"http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
        ),
        ("manifest invalid", "push of 127.0.0.1:5000/app:1 failed: manifest invalid"),
    ],
)
def test_push_errors_say_refused_or_unreachable(error: str, expected: str) -> None:
    assert push_failure("127.0.0.1:5000/app:1", error) == expected
    with pytest.raises(StepFailed) as caught:
        PushLog("127.0.0.1:5000/app:1", None).feed({"error": error})
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("reference", "registry"),
    [
        ("127.0.0.1:5000/app:1", "127.0.0.1:5000"),
        ("ghcr.io/org/app", "ghcr.io"),
        ("localhost/app", "localhost"),
        ("org/app:1", "docker.io"),
        ("app", "docker.io"),
    ],
)
def test_the_registry_of_a_reference(reference: str, registry: str) -> None:
    assert registry_of(reference) == registry


def test_capped_output_keeps_the_last_bytes_and_says_it_was_cut() -> None:
    # Given one byte more than the cap, in chunks, the first two bytes one character
    capped = Capped()
    capped.add("é".encode())
    capped.add(b"y" * (OUTPUT_CAP - 3))
    capped.add(b"z\n")
    # Then the end is kept, the character cut in half is dropped, and it is marked cut
    assert capped.text() == "y" * (OUTPUT_CAP - 3) + "z\n"
    assert capped.cut


def test_short_output_is_kept_whole() -> None:
    capped = Capped()
    capped.add(b"one\n")
    capped.add(b"two\n")
    assert (capped.text(), capped.cut) == ("one\ntwo\n", False)
