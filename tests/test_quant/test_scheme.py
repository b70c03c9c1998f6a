"""QuantScheme: validation of bit-widths and options, names, dict round trip, docs."""
import doctest

import numpy as np
import pytest

import maskaq_plugin.quant.scheme as scheme_module
from maskaq_plugin.quant import QuantScheme


@pytest.mark.parametrize('bits', [2, 3, 4, 5, 6, 7, 8, np.int64(4)])
def test_valid_bits(bits):
    s = QuantScheme(w_bits=bits, a_bits=bits)
    assert (s.w_bits, s.a_bits) == (int(bits), int(bits))
    assert type(s.w_bits) is int  # numpy ints would leak into the JSON config


@pytest.mark.parametrize('field', ['w_bits', 'a_bits'])
@pytest.mark.parametrize('bits', [1, 9, 0, -4, 16, 4.0, '8', True, None])
def test_invalid_bits_name_value_and_range(field, bits):
    with pytest.raises(ValueError) as err:
        QuantScheme(**{field: bits})
    msg = str(err.value)
    assert field in msg and repr(bits) in msg and '[2, 8]' in msg


def test_options_are_keyword_only_and_validated():
    with pytest.raises(TypeError):
        QuantScheme(8, 8, False)
    with pytest.raises(ValueError, match="activation_mode.*'affine'"):
        QuantScheme(recipe='nncf', activation_mode='affine')
    with pytest.raises(ValueError, match="activation_mode='asymmetric' applies to recipe='nncf'"):
        QuantScheme(activation_mode='asymmetric')  # 'lsq' has its own zero point
    with pytest.raises(ValueError, match="recipe must be one of .*'ours'"):
        QuantScheme(recipe='ours')
    with pytest.raises(ValueError, match="act_init must be one of .*'mse'"):
        QuantScheme(act_init='mse')
    with pytest.raises(ValueError, match="act_init='minmax' applies to recipe='lsq' only"):
        QuantScheme(recipe='nncf', act_init='minmax')
    assert QuantScheme(4, 4).act_init == 'lsq'
    minmax = QuantScheme(4, 4, act_init='minmax')
    assert QuantScheme.from_dict(minmax.to_dict()) == minmax != QuantScheme(4, 4)
    s = QuantScheme(4, 8, keep_input_fp=False, quantize_attention_matmuls=False)
    assert s.name == 'W4A8' and not s.keep_input_fp and not s.quantize_attention_matmuls


def test_frozen_and_dict_round_trip():
    s = QuantScheme(3, 4, recipe='nncf', activation_mode='asymmetric')
    with pytest.raises(AttributeError):
        s.w_bits = 8
    assert QuantScheme.from_dict(s.to_dict()) == s
    assert s.to_dict() == dict(w_bits=3, a_bits=4, keep_input_fp=True,
                               quantize_attention_matmuls=True, recipe='nncf',
                               activation_mode='asymmetric', act_init=None)
    assert QuantScheme.from_dict(QuantScheme(4, 4).to_dict()) == QuantScheme(4, 4)


def test_default_recipe_is_the_authors_and_old_dicts_stay_nncf():
    assert QuantScheme(4, 4).recipe == 'lsq' and QuantScheme(4, 4).activation_mode is None
    assert QuantScheme(4, 4, recipe='nncf').activation_mode == 'symmetric'
    # a scheme saved before recipes existed (no 'recipe' key) was NNCF's quantizers
    old = dict(w_bits=4, a_bits=4, keep_input_fp=True, quantize_attention_matmuls=True,
               activation_mode='symmetric')
    assert QuantScheme.from_dict(old) == QuantScheme(4, 4, recipe='nncf')


def test_docstring_examples_run():
    assert doctest.testmod(scheme_module).failed == 0


def test_scheme_import_does_not_need_nncf():
    import subprocess
    import sys
    code = ('import sys, maskaq_plugin.quant as q; q.QuantScheme(4, 4); '
            'sys.exit("nncf" in sys.modules)')
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0
