"""docs/configuration.md and examples/hbroker.toml are generated from the schema."""

import importlib.util
from pathlib import Path

from hbroker.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_docs",
                                                  ROOT / "tools" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_and_example_are_up_to_date():
    stale = _generator().outdated()
    assert stale == [], f"regenerate with python tools/gen_config_docs.py: {stale}"


def test_example_configuration_loads_to_the_defaults():
    assert load_config(ROOT / "examples" / "hbroker.toml") == Config()


def test_reference_documents_every_option():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    import dataclasses

    from hbroker.config import SECTIONS, ListenerConfig

    for cls in (ListenerConfig, *SECTIONS.values()):
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in doc, f.name
