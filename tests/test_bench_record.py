"""`python -m bench` records each table between its own markers of docs/performance.md:
the push phase's section never overwrites the other phases' table, nor they it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import BEGIN, END, PUSH_BEGIN, PUSH_END, record


@pytest.mark.timeout(10)
def test_a_section_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    document = tmp_path / "performance.md"
    document.write_text(f"# Performance\n\nintro\n\n{BEGIN}\nold main\n{END}\n\n## Notes\n\nkept\n")
    record("push one\n", document, PUSH_BEGIN, PUSH_END)  # no section yet: appended
    record("push two\n", document, PUSH_BEGIN, PUSH_END)
    text = document.read_text()
    assert f"{BEGIN}\nold main\n{END}" in text
    assert f"{PUSH_BEGIN}\npush two\n{PUSH_END}" in text
    assert "push one" not in text
    record("new main\n", document)
    text = document.read_text()
    assert f"{BEGIN}\nnew main\n{END}" in text
    assert f"{PUSH_BEGIN}\npush two\n{PUSH_END}" in text
    assert text.index("## Notes") < text.index(PUSH_BEGIN)
    assert "intro" in text
    assert "kept" in text
