"""One kind of failure must not be reported as another: an import failure is an installation
problem (never "the weight file is probably truncated or corrupt"), a bug propagates as itself,
and only network/name errors become "could not load from the hub"."""
from __future__ import annotations

import pickle

import pytest

from tamt import models
from tamt.hub import is_hub_error


class _Raises:
    def __init__(self, exc):
        self.exc = exc

    def from_pretrained(self, source, **kwargs):
        raise self.exc


def test_import_error_is_named_as_an_installation_problem(tmp_path):
    exc = ImportError("cannot import name 'CUDAProperties' from 'kernels' (/repo/kernels/__init__.py)", name="kernels")
    with pytest.raises(ImportError) as info:
        models.from_pretrained(_Raises(exc), str(tmp_path))
    msg = str(info.value)
    assert "installation problem" in msg and "CUDAProperties" in msg and "kernels" in msg
    assert "corrupt" not in msg and "truncated" not in msg


@pytest.mark.parametrize("exc", [EOFError("Ran out of input"), pickle.UnpicklingError("invalid load key"),
                                 OSError("Unable to load weights from pytorch checkpoint file"),
                                 RuntimeError("PytorchStreamReader failed reading zip archive")])
def test_deserialisation_errors_name_the_file(tmp_path, exc):
    with pytest.raises(ValueError, match="truncated or corrupt"):
        models.from_pretrained(_Raises(exc), str(tmp_path))


@pytest.mark.parametrize("exc", [TypeError("__init__() got an unexpected keyword argument 'x'"),
                                 KeyError("encoder.layer.0"), AttributeError("no attribute 'foo'")])
def test_other_errors_propagate_as_themselves(tmp_path, exc):
    with pytest.raises(type(exc)) as info:
        models.from_pretrained(_Raises(exc), str(tmp_path))
    assert "corrupt" not in str(info.value)


def test_is_hub_error_only_for_network_and_name_problems():
    class DatasetNotFoundError(FileNotFoundError):
        pass

    class HfHubHTTPError(Exception):  # the name is what counts (the real one subclasses requests' HTTPError)
        pass

    assert is_hub_error(ConnectionError("refused")) and is_hub_error(TimeoutError())
    assert is_hub_error(DatasetNotFoundError("nyu-mll/glue")) and is_hub_error(HfHubHTTPError("404"))
    for exc in (ImportError("x"), TypeError("x"), KeyError("x"), ValueError("x")):
        assert not is_hub_error(exc)


def test_triton_import_advice_matches_the_failure(monkeypatch):
    from tamt.ops import _backend

    def fake_import(name):
        if name == "tamt.kernels":
            raise ModuleNotFoundError("No module named 'triton'", name="triton")
        raise AssertionError(name)

    _backend._triton_import_error.cache_clear()
    monkeypatch.setattr(_backend.importlib, "import_module", fake_import)
    try:
        assert "pip install 'tamt[triton]'" in _backend._triton_import_error()

        def broken(name):
            raise ImportError("cannot import name 'x' from 'tamt.kernels._common'")

        _backend._triton_import_error.cache_clear()
        monkeypatch.setattr(_backend.importlib, "import_module", broken)
        why = _backend._triton_import_error()
        assert "ImportError" in why and "pip install" not in why
    finally:
        monkeypatch.undo()
        _backend._triton_import_error.cache_clear()
