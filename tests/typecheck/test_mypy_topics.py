"""``mypy --strict`` on typed topics: the model flows into publish and subscribe."""

from __future__ import annotations

from . import HERE, run_mypy


def test_topic_code_type_checks() -> None:
    output, status = run_mypy(HERE / "usage_topics.py")
    assert status == 0, output


def test_the_model_is_what_publish_takes_and_subscribe_yields() -> None:
    output, status = run_mypy(HERE / "fail" / "topics_misuse.py")
    assert status == 1, output
    errors = [line for line in output.splitlines() if ": error:" in line]
    notes = [line for line in output.splitlines() if "Revealed type is" in line]
    assert len(errors) == 1 and 'incompatible type "Other"' in errors[0], output
    assert "(event: tests.typecheck.fail.topics_misuse.Tick | typing.Mapping[" in notes[0], output  # publish's argument
    assert notes[1].endswith('Revealed type is "tests.typecheck.fail.topics_misuse.Tick"'), output  # subscribe's items
