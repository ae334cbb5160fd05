"""The run-config keys are declared once (profl_strategy/run/config_keys.py): what Flower and
the docs read must not drift from that declaration."""

import re
import tomllib

from omegaconf import OmegaConf

from profl_strategy.run.config import CONF_DIR, compose_config
from profl_strategy.run.config_keys import KEYS, RUN_CONFIG_KEYS, markdown_table, pyproject_block
from tests.support.paths import REPO as ROOT

HEAD = "[tool.flwr.app.config]\n"


def test_pyproject_block_is_the_declarations() -> None:
    # Flower reads pyproject.toml before any app code runs, so the block is not generated
    # at run time: it must be what `python -m profl_strategy.run.config_keys --pyproject` prints.
    text = (ROOT / "pyproject.toml").read_text()
    start = text.index(HEAD) + len(HEAD)
    body = text[start : text.index("\n\n", start) + 1]
    assert body == pyproject_block(CONF_DIR), (
        "pyproject.toml's [tool.flwr.app.config] differs from profl_strategy/run/config_keys.py: "
        "paste `python -m profl_strategy.run.config_keys --pyproject` there"
    )


def test_pyproject_keys_are_empty_but_the_preset() -> None:
    # "" lets a preset supply a key; a value there would override every preset.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert list(config) == [k.name for k in KEYS]
    assert {k: v for k, v in config.items() if v != ""} == {"preset": "quickstart"}


def test_docs_table_is_the_declarations() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = re.search(r"--markdown -->\n(.*)<!-- end generated -->", text, re.S)
    assert table is not None and table.group(1) == markdown_table(CONF_DIR), (
        "docs/configuration.md's table differs from profl_strategy/run/config_keys.py: paste "
        "`python -m profl_strategy.run.config_keys --markdown` there"
    )


def test_readme_table_documents_every_key() -> None:
    # The README groups keys per row (`a` / `b`) with the default run's values.
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (`[^|]*`) \|", text, re.M)
    documented = {name for row in rows for name in re.findall(r"`([a-z0-9-]+)`", row)}
    assert documented == {k.name for k in KEYS}


def test_every_key_has_help_and_every_path_is_in_conf() -> None:
    # A key whose path the composed config lacks would be set by `++` and never read.
    cfg = compose_config({"preset": "laptop"})
    for key in KEYS:
        assert key.help, key.name
    for name, path in RUN_CONFIG_KEYS.items():
        if not path.startswith("group:"):
            assert OmegaConf.select(cfg, path) is not None, name


def test_key_sources_tell_typed_preset_and_default_apart() -> None:
    from profl_strategy.run.config import key_sources

    run_config = {"preset": "laptop", "lr": 0.1, "seed": "", "overrides": "method.em.window=4"}
    found = {s.key: (s.value, s.source) for s in key_sources(run_config)}
    assert set(found) == {k.name for k in KEYS} - {"preset", "overrides"}
    assert found["lr"] == (0.1, "typed")
    assert found["em-window"] == (4, "typed")  # through overrides
    assert found["width"] == (0.5, "preset")
    assert found["batch-size"] == (32, "preset")  # laptop sets it, to the default's value
    assert found["model"] == ("cnn", "preset")  # laptop's defaults list picks it
    assert found["seed"] == (0, "default")  # "" is "what the preset says"
    assert found["method"] == ("profl", "default")
    assert found["plans"] == ("exact", "default")
