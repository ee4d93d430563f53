"""Bad input: each error names the problem and the fix."""

from __future__ import annotations

import pytest
import torch
from ntk_models import MLP, make
from torch import nn

from kernelens import empirical_ntk
from kernelens.ntk import contract, dense_dot, jacobian_factors, jvp


@pytest.fixture
def mlp():
    return MLP().double().eval(), torch.randn(3, 5, dtype=torch.float64)


def test_not_a_module(mlp):
    _, x = mlp
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        empirical_ntk(lambda t: t, x)


def test_model_rejects_input_shows_its_error_and_shapes(mlp):
    model, _ = mlp
    with pytest.raises(ValueError, match=r"rejected x1 \(shape \(1, 7\).*mat1 and mat2"):
        empirical_ntk(model, torch.randn(4, 7, dtype=torch.float64))


def test_model_dtype_mismatch_is_reported(mlp):
    model, _ = mlp
    with pytest.raises(ValueError, match="model parameters are torch.float64"):
        empirical_ntk(model, torch.randn(4, 5))


def test_output_not_batched():
    class Summed(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x).sum()

    with pytest.raises(ValueError, match=r"must be \[N, O\] or \[N\]"):
        empirical_ntk(Summed(), torch.randn(4, 3))


def test_output_tuple():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x), x

    with pytest.raises(TypeError, match="must return one tensor"):
        empirical_ntk(Pair(), torch.randn(4, 3))


def test_unknown_params_name_suggests(mlp):
    model, x = mlp
    with pytest.raises(ValueError, match=r"'0.wieght'.*Did you mean '0.weight'"):
        empirical_ntk(model, x, params=["0.wieght"])


def test_foreign_parameter_object(mlp):
    model, x = mlp
    with pytest.raises(ValueError, match="not a parameter of the model"):
        empirical_ntk(model, x, params=[nn.Parameter(torch.zeros(2))])


def test_empty_params(mlp):
    model, x = mlp
    with pytest.raises(ValueError, match="params is empty"):
        empirical_ntk(model, x, params=[])


def test_no_trainable_parameters(mlp):
    model, x = mlp
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        empirical_ntk(model, x)


def test_x1_x2_dtype_and_device(mlp):
    model, x = mlp
    with pytest.raises(TypeError, match=r"x2 has dtype torch.float32.*x2.to\(x1.dtype\)"):
        empirical_ntk(model, x, x.float())
    with pytest.raises(ValueError, match=r"x2 is on meta.*one device"):
        empirical_ntk(model, x, torch.empty(2, 5, dtype=torch.float64, device="meta"))
    with pytest.raises(ValueError, match="x1 examples have shape"):
        empirical_ntk(model, x, torch.randn(2, 6, dtype=torch.float64))


def test_non_tensor_empty_and_nonfinite_inputs(mlp):
    model, x = mlp
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        empirical_ntk(model, x.numpy())
    with pytest.raises(ValueError, match="is empty"):
        empirical_ntk(model, x[:0])
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        empirical_ntk(model, bad)


def test_bad_method_and_output(mlp):
    model, x = mlp
    with pytest.raises(ValueError, match="unknown method 'fast'"):
        empirical_ntk(model, x, method="fast")
    with pytest.raises(ValueError, match="unknown output 'diag'"):
        empirical_ntk(model, x, output="diag")


def test_batch_coupling_modules_in_training_mode():
    model, x1, _ = make("cnn")
    model.train()
    with pytest.raises(ValueError, match=r"'bn'.*batch statistics.*model.eval\(\)"):
        empirical_ntk(model, x1)
    drop = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"'1'.*Dropout.*model.eval\(\)"):
        empirical_ntk(drop, torch.randn(2, 3))


def test_weights_mapping_errors(mlp):
    model, x = mlp
    with pytest.raises(ValueError, match="weights names 'nope'"):
        empirical_ntk(model, x, weights={"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"weights\['0.weight'\] has shape \(2,\)"):
        empirical_ntk(model, x, weights={"0.weight": torch.zeros(2)})


def test_cotangent_and_factor_errors(mlp):
    model, x = mlp
    with pytest.raises(ValueError, match=r"cotangents must be \[N, O\] or \[N, O, R\]"):
        jacobian_factors(model, x, cotangents=torch.zeros(3, 4))
    f = jacobian_factors(model, x)
    g = jacobian_factors(model, x, params=["0.weight"])
    with pytest.raises(ValueError, match="cover different parameters"):
        contract(f, g)
    h = jacobian_factors(model, x, cotangents=torch.ones(3, 3))
    with pytest.raises(ValueError, match="same number of columns"):
        contract(f, h, output="trace")
    with pytest.raises(ValueError, match=r"G must be \[M, P\]"):
        dense_dot(torch.zeros(2, 5), f)
    with pytest.raises(ValueError, match="scale for '0.weight'"):
        f.scale_({"0.weight": torch.ones(3)})
    with pytest.raises(KeyError, match="not one of the selected"):
        f.scale_({"zzz": 2.0})
    with pytest.raises(ValueError, match="tangents"):
        jvp(model, x, {"0.weight": torch.zeros(2)})


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return {"logits": self.lin(x), "hidden": x}


def test_dict_output_message_names_select_output_and_it_works():
    from ntk_models import reference_ntk

    from kernelens.ntk import select_output

    model = DictOut().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"select_output\(model, 'logits'\)"):
        empirical_ntk(model, x)
    wrapped = select_output(model, "logits")
    K = empirical_ntk(wrapped, x)
    want = reference_ntk(nn.Sequential(model.lin), x)
    assert torch.allclose(K, want, rtol=1e-12, atol=0)
    assert "model.lin.weight" in dict(wrapped.named_parameters())
    pair = nn.Module()
    pair.lin = model.lin
    pair.forward = lambda z: (pair.lin(z), z)
    assert torch.equal(empirical_ntk(select_output(pair, 0), x), K)
    with pytest.raises(ValueError, match="could not take 'nope'.*keys are"):
        select_output(model, "nope")(x)
    with pytest.raises(TypeError, match="key_or_index"):
        select_output(model, 1.5)
