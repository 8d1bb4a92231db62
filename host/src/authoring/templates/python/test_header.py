"""Tests of the {{name}} policy: `python3 -m unittest` (or `pytest`).

They call app.py directly (no component, no gateway) after
`sluice plugin bindings` wrote the generated `wit_world` package into
bindings/. The builders give every field a default, so a test names only
what it is about.
"""

import pathlib
import sys
import unittest

sys.path[:0] = [str(pathlib.Path(__file__).parent), str(pathlib.Path(__file__).parent / "bindings")]

import app  # noqa: E402
from wit_world.imports.types import Message, Request, Route  # noqa: E402


def message(**overrides) -> Message:
    """One message (WIT `message`)."""
    fields = dict(role="user", text="hello", has_tool_calls=False, extra_json=None)
    fields.update(overrides)
    return Message(**fields)


def request(**overrides) -> Request:
    """A request as the policy sees it (WIT `request`)."""
    fields = dict(
        id="test",
        route=Route.CHAT,
        provider="openai",
        model="gpt-4o-mini",
        streaming=False,
        max_tokens=None,
        estimated_prompt_tokens=2,
        temperature=None,
        messages=[message()],
        params=[],
        tenant="acme",
        tier="free",
        key_id=None,
        client_ip="127.0.0.1",
        headers=[],
    )
    fields.update(overrides)
    return Request(**fields)


class LifecycleTest(unittest.TestCase):
    def test_init_accepts_an_empty_config(self):
        app.Lifecycle().init("{}")
