"""Guard the public surface: ``__all__`` is sorted, complete and importable."""

from __future__ import annotations

import types

import pytest

import tether
import tether.testing


@pytest.mark.parametrize("module", [tether, tether.testing], ids=lambda m: m.__name__)
def test_all_is_sorted_and_importable(module: types.ModuleType) -> None:
    exported = module.__all__
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    for name in exported:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("module", [tether, tether.testing], ids=lambda m: m.__name__)
def test_every_public_name_is_exported(module: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert public <= set(module.__all__)


def test_exported_members_belong_to_tether() -> None:
    for name in tether.__all__:
        value = getattr(tether, name)
        if name != "__version__":
            assert value.__module__.startswith("tether."), name
