"""NNCF's CPU extension: prebuilt and loadable without NNCF's timeout, or the fallback.

docs/install.md: its first build took ~80 s, over NNCF's 60 s default load timeout
(``ExtensionLoaderTimeoutException``). ``tools/setup_env.sh`` prebuilds it (a cold build
measured 24 s on an idle 2-core box). Even a prebuilt load runs three subprocesses
(compiler and ninja checks): 0.05 s idle, but 6-40 s measured inside a pytest process at
load average 8, so ``ensure_cpu_extension`` lifts the timeout unless the user set one.
"""
import logging
import os

import pytest
import torch
from nncf.torch.extensions import (EXTENSION_LOAD_TIMEOUT_ENV_VAR, ExtensionLoader,
                                   ExtensionLoaderTimeoutException, ExtensionNamespace)
from nncf.torch.quantization.extensions import QuantizedFunctionsCPULoader
from nncf.torch.quantization.reference import ReferenceQuantizedFunctions

from maskaq_plugin.quant.extension import _ensure_loaded, ensure_cpu_extension


class _TimingOutLoader(ExtensionLoader):
    calls = 0

    @classmethod
    def extension_type(cls):
        return None

    @classmethod
    def name(cls):
        return 'never_builds'

    @classmethod
    def load(cls):
        cls.calls += 1
        raise ExtensionLoaderTimeoutException('took longer than 60 s')


def _reference_quantize(x):
    low, rng = torch.tensor([-1.0]), torch.tensor([2.0])
    return ReferenceQuantizedFunctions.Quantize_forward(x, low, rng, 16)


def test_prebuilt_extension_loads(monkeypatch):
    monkeypatch.delenv(EXTENSION_LOAD_TIMEOUT_ENV_VAR, raising=False)
    built = os.path.join(QuantizedFunctionsCPULoader.get_build_dir(),
                         'quantized_functions_cpu.so')
    namespace = ExtensionNamespace(QuantizedFunctionsCPULoader())
    kind = _ensure_loaded(namespace)
    assert kind == ('compiled' if os.path.exists(built) else 'reference')
    x = torch.linspace(-1.5, 1.5, 101)
    low, rng = torch.tensor([-1.0]), torch.tensor([2.0])
    out = namespace.get('Quantize_forward')(x, low, rng, 16)
    assert torch.allclose(out, _reference_quantize(x))  # same kernel semantics
    assert EXTENSION_LOAD_TIMEOUT_ENV_VAR not in os.environ
    assert ensure_cpu_extension() in ('compiled', 'reference')


def test_timeout_falls_back_to_reference_kernels(monkeypatch, caplog):
    monkeypatch.delenv(EXTENSION_LOAD_TIMEOUT_ENV_VAR, raising=False)
    namespace = ExtensionNamespace(_TimingOutLoader())
    with caplog.at_level(logging.WARNING):
        assert _ensure_loaded(namespace) == 'reference'
    assert 'ExtensionLoaderTimeoutException' in caplog.text
    assert namespace.get('Quantize_forward') is ReferenceQuantizedFunctions.Quantize_forward
    assert _ensure_loaded(namespace) == 'reference' and _TimingOutLoader.calls == 1
    assert EXTENSION_LOAD_TIMEOUT_ENV_VAR not in os.environ


@pytest.mark.parametrize('user_value', ['180', '0'])
def test_a_user_timeout_is_kept(monkeypatch, user_value):
    monkeypatch.setenv(EXTENSION_LOAD_TIMEOUT_ENV_VAR, user_value)
    seen = []

    class Loader(_TimingOutLoader):
        @classmethod
        def load(cls):
            seen.append(os.environ[EXTENSION_LOAD_TIMEOUT_ENV_VAR])
            return ReferenceQuantizedFunctions

    _ensure_loaded(ExtensionNamespace(Loader()))
    assert seen == [user_value] and os.environ[EXTENSION_LOAD_TIMEOUT_ENV_VAR] == user_value
