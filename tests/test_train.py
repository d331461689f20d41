"""Loss, optimiser schedule, gradient accumulation and the jitted train step."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import SECTIONS
from repro.config import OptimConfig
from repro.data.tokens import PAD_ID
from repro.train.optim import learning_rate_schedule
from repro.train.state import build
from repro.train.step import token_losses


def test_token_losses_by_hand():
    logits = jnp.array([[[0.0, math.log(3.0), 0.0], [1.0, 1.0, 1.0]]])  # B=1, M=2, V=3
    targets = jnp.array([[1, PAD_ID]])
    loss, nll, correct, mask = token_losses(logits, targets, z_loss=1e-4, label_smoothing=0.0)
    log_z = math.log(5.0)  # 1 + 3 + 1
    assert float(nll[0, 0]) == pytest.approx(log_z - math.log(3.0), rel=1e-6)
    assert float(loss[0, 0]) == pytest.approx(log_z - math.log(3.0) + 1e-4 * log_z**2, rel=1e-6)
    assert float(loss[0, 1]) == 0.0 and float(nll[0, 1]) == 0.0  # PAD target masked
    assert correct.tolist() == [[1.0, 0.0]] and mask.tolist() == [[1.0, 0.0]]
    # Label smoothing changes the training loss, never the reported NLL.
    loss_s, nll_s, *_ = token_losses(logits, targets, z_loss=0.0, label_smoothing=0.1)
    assert float(nll_s[0, 0]) == pytest.approx(float(nll[0, 0]))
    assert float(loss_s[0, 0]) != pytest.approx(float(nll[0, 0]))


def test_schedules():
    for sched, at_end in [("constant", 1.0), ("cosine", 0.0), ("rsqrt", math.sqrt(10 / 100))]:
        f = learning_rate_schedule(OptimConfig(lr=1.0, warmup_steps=10, schedule=sched, decay_steps=100))
        assert float(f(0)) == 0.0 and float(f(5)) == pytest.approx(0.5) and float(f(10)) == pytest.approx(1.0)
        assert float(f(100)) == pytest.approx(at_end, abs=1e-6), sched


def _smoke(**train):
    exp = SECTIONS["copy"].presets["smoke"]
    exp = dataclasses.replace(exp, model=dataclasses.replace(exp.model, dropout=0.0))
    return dataclasses.replace(exp, train=dataclasses.replace(exp.train, **train))


def _one_step(exp, step=3):
    # Not step 0: the linear warm-up starts at learning rate 0, so step 0 changes nothing.
    run = build(exp)
    ds = SECTIONS["copy"].make_dataset(exp)
    batch = ds.train_batch(step, exp.train.batch_size)
    params, _, m = run.steps.train(run.params, run.opt_state, batch, np.int32(step))
    return params, m


def test_gradient_accumulation_matches_full_batch():
    p1, m1 = _one_step(_smoke(grad_accum=1))
    p4, m4 = _one_step(_smoke(grad_accum=4))
    assert float(m1["loss"]) == pytest.approx(float(m4["loss"]), rel=1e-5)
    assert float(m1["grad_norm"]) == pytest.approx(float(m4["grad_norm"]), rel=1e-4)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_train_step_is_deterministic_and_changes_params():
    exp = SECTIONS["copy"].presets["smoke"]  # dropout on: keys are fold_in(seed, step)
    exp = dataclasses.replace(exp, optim=dataclasses.replace(exp.optim, warmup_steps=0))
    pa, ma = _one_step(exp)
    pb, mb = _one_step(exp)
    assert float(ma["loss"]) == float(mb["loss"])
    for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    fresh = build(exp).params
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(fresh), strict=True))  # fmt: skip
