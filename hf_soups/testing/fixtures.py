"""Pytest fixture ``hub_server``: a fresh local Hub per test, with ``huggingface_hub`` pointed at it.

Load it with ``pytest_plugins = ["hf_soups.testing.fixtures"]`` in the top ``conftest.py``.

The fixture sets ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_CACHE`` (a temporary folder), ``HF_HUB_DISABLE_XET=1`` and
``HF_HUB_OFFLINE=0``, unsets ``HF_TOKEN``, and patches the values ``huggingface_hub.constants`` read from them at
import time, so both this process and subprocesses talk to the test Hub. ``transformers``' shared ``HfApi`` is
dropped before and after, so it is rebuilt with the test endpoint.

Example:
    >>> def test_upload(hub_server):                                 # doctest: +SKIP
    ...     api = HfApi(token=hub_server.token)
    ...     api.create_repo(f"{DEFAULT_USER}/demo")
    ...     alice = hub_server.add_user("alice")                      # another user's token
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from huggingface_hub import constants

from hf_soups.testing.hub_server import HubServer


def _drop_transformers_api() -> None:
    hub = sys.modules.get("transformers.utils.hub")
    if hub is not None and hasattr(hub, "_hf_api"):
        hub._hf_api = None


@pytest.fixture
def hub_server(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    home = tmp_path_factory.mktemp("hf_home")
    with HubServer() as hub:
        settings = {
            "ENDPOINT": hub.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
        }
        for name, value in settings.items():
            monkeypatch.setattr(constants, name, value)
        for name, value in {
            "HF_ENDPOINT": hub.endpoint,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
        }.items():
            monkeypatch.setenv(name, value)
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_TOKEN_PATH"):
            monkeypatch.delenv(name, raising=False)
        _drop_transformers_api()
        yield hub
        _drop_transformers_api()
