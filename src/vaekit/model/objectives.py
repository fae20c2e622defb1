"""The objectives, written once: the ELBO and the importance-weighted bound per example, in nats; bits per dimension.

They see a model only through its parts (`LatentModel`: encode to a posterior, decode to a likelihood, a prior), so
every posterior family, prior and likelihood goes through the same few lines. Labels `y` (N,), where given, pass
through to encode and decode: a conditional model's bounds are on log p(x|y). Every function returns one value per
example (shape (N,)); callers average over the batch at the very end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from vaekit.config import ELBO_ESTIMATORS, TrainConfig
from vaekit.devices import accumulate_dtype
from vaekit.errors import VaekitError
from vaekit.model.heads import Likelihood
from vaekit.model.posteriors import PATHWISE, Family, Posterior
from vaekit.model.priors import Prior
from vaekit.model.randomness import Randomness
from vaekit.parts import OBJECTIVES, Part, Requirement


class LatentModel(Protocol):
    prior: Prior
    posterior: Family

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior: ...
    def decode(self, z: Tensor, y: Tensor | None = None) -> Likelihood: ...


@dataclass
class ElboTerms:
    """log p(x|z) and KL(q(z|x) ‖ p(z)) per example; the ELBO is their difference."""

    log_px: Tensor  # (N,) reconstruction term E_q[log p(x|z)], Monte Carlo estimate at samples of q
    kl: Tensor  # (N,) closed form where the prior has one, else a Monte Carlo estimate
    # (N,) log p(x|z) at relaxed codes (Gumbel-softmax training): the surrogate the gradient flows through. Beside the
    # discrete KL it is not an ELBO, so `log_px` then holds the estimate at exact samples, without gradient.
    relaxed_log_px: Tensor | None = None
    kl_units: Tensor | None = None  # (N, units) the KL per latent unit, where it has a closed form (for free bits)
    bound: Tensor | None = None  # (N,) the importance-weighted bound, when the objective is one
    surrogate: Tensor | None = None  # (N,) what the gradient flows through when it is not log p(x|z) − β·KL

    @property
    def elbo(self) -> Tensor:
        return self.log_px - self.kl

    def objective(
        self, beta: float = 1.0, free_bits: float = 0.0, batch_mean: Callable[[Tensor], Tensor] | None = None
    ) -> Tensor:
        """What training maximizes, per example.

        The ELBO family: log p(x|z) − β·KL, the β-VAE objective (Higgins et al. 2017); with relaxed codes the relaxed
        reconstruction term stands in for log p(x|z) (Jang et al. 2017). With `free_bits` λ > 0, each latent unit's
        KL counts as max(λ, its batch mean) (Kingma et al. 2016): per example, a unit whose batch mean (from
        `batch_mean`, which may average over processes) is below λ contributes the constant λ and no gradient, so the
        batch average is exactly Σ_u max(λ, mean KL_u). The importance-weighted bound carries its own surrogate.
        """
        if self.surrogate is not None:
            return self.surrogate
        log_px = self.log_px if self.relaxed_log_px is None else self.relaxed_log_px
        kl = self.kl
        if free_bits > 0 and self.kl_units is not None:
            mean = (batch_mean or (lambda t: t.mean(0)))(self.kl_units.detach())
            kl = torch.where(mean >= free_bits, self.kl_units, torch.full_like(self.kl_units, free_bits)).sum(-1)
        return log_px - kl if beta == 1 else log_px - beta * kl  # β = 1: one op fewer, forward and backward


def score_term(reward: Tensor, log_q: Tensor) -> Tensor:
    """reward · (log q − stop_gradient(log q)): zero in value, and its gradient is the score-function (REINFORCE)
    estimator reward · ∇ log q(z) (Williams 1992), unbiased because E_q[∇ log q] = 0. `reward` carries no gradient."""
    return reward.detach() * (log_q - log_q.detach())


def leave_one_out_mean(values: Tensor) -> Tensor:
    """For S samples along dim 0, each one's baseline: the mean of the other S − 1 (Kool et al. 2019, "Buy 4
    REINFORCE samples, get a baseline for free"); independent of its own sample, so the estimator stays unbiased."""
    return (values.sum(0, keepdim=True) - values) / (len(values) - 1)


def elbo(
    model: LatentModel,
    x: Tensor,
    generator: Randomness = None,
    estimator: str = "reparam",
    samples: int = 1,
    y: Tensor | None = None,
) -> ElboTerms:
    """ELBO(x) = E_{q(z|x)}[log p(x|z)] − KL(q(z|x) ‖ p(z))   (Kingma & Welling 2014, eq. 10).

    `samples` draws of z estimate the expectation; the prior gives the KL (exact where it has a closed form, which is
    lower variance than sampling it too). The value is the same for every `estimator`; only the gradient reaching
    the encoder differs:
      reparam                  z = mu + sigma·eps, so ∇ flows through z (the pathwise estimator);
      score-function           z is drawn with no path back, and log p(x|z)·∇ log q(z|x) stands in for it;
      score-function-baseline  the same with log p(x|z) minus a leave-one-out baseline (needs samples ≥ 2).
    The decoder's gradient, and the closed-form KL's, are the same in all three. For the autoencoder's point mass,
    z is the code and the KL is 0: log p(x|code) alone is its objective (and no ELBO).
    """
    if estimator not in ELBO_ESTIMATORS:
        raise VaekitError(f"unknown estimator {estimator!r} for the ELBO: use one of {', '.join(ELBO_ESTIMATORS)}")
    posterior = model.encode(x, y)
    if estimator != "reparam" and model.prior.kl_per_unit(posterior) is None:  # a sampled KL needs a score term too
        raise VaekitError(
            f"the score-function estimators need a closed-form KL, and {model.prior.describe()} has none: "
            "use --estimator reparam, or the standard prior"
        )
    if estimator == "reparam":
        z = posterior.rsample(samples, generator=generator)
        log_px = model.decode(z, y).log_prob(x)  # (samples, N)
    else:
        z = posterior.sample(samples, generator=generator)  # no path back to mu or sigma
        log_px = model.decode(z, y).log_prob(x)  # reaches the decoder only
        reward = log_px.detach()
        if estimator == "score-function-baseline":
            reward = reward - leave_one_out_mean(reward)
        log_px = log_px + score_term(reward, posterior.log_prob(z))
    kl_units = model.prior.kl_per_unit(posterior, z)  # given z, for a closed form that holds given the layers above
    kl = kl_units.sum(-1) if kl_units is not None else model.prior.kl(posterior, z)
    if estimator == "reparam" and posterior.relaxed:  # the ELBO itself needs exact samples of q; no gradient
        with torch.no_grad():
            exact = model.decode(posterior.sample(samples, generator=generator), y).log_prob(x)
        return ElboTerms(log_px=sample_mean(exact), kl=kl, relaxed_log_px=sample_mean(log_px), kl_units=kl_units)
    return ElboTerms(log_px=sample_mean(log_px), kl=kl, kl_units=kl_units)


def sample_mean(per_sample: Tensor) -> Tensor:
    """The mean over the samples axis (dim 0); one sample is only squeezed (a view, and a backward op fewer)."""
    return per_sample.squeeze(0) if len(per_sample) == 1 else per_sample.mean(0)


def log_importance_weights(
    model: LatentModel, x: Tensor, k: int, generator: Randomness = None, y: Tensor | None = None
) -> Tensor:
    """log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x) for z_i ~ q(z|x), i = 1..k; shape (k, N). Exact samples:
    one-hot codes for a categorical posterior."""
    posterior = model.encode(x, y)
    z = posterior.sample(k, generator=generator)
    return model.decode(z, y).log_prob(x) + model.prior.log_prob(z) - posterior.log_prob(z)


def importance_weighted(
    model: LatentModel,
    x: Tensor,
    k: int,
    generator: Randomness = None,
    estimator: str = "reparam",
    y: Tensor | None = None,
) -> ElboTerms:
    """The importance-weighted bound as a training objective (Burda, Grosse & Salakhutdinov 2016):
    L_k = log (1/k) Σ_i w_i; k = 1 is the ELBO with a sampled KL. Its gradient, by `estimator`:
      reparam  ∇ L_k = Σ_i w̃_i ∇ log w_i, w̃ the normalized weights (the IWAE estimator);
      dreg     the doubly reparameterized encoder gradient (Tucker et al. 2018): q's parameters are held fixed in
               log q(z_i|x), so only the path through z_i remains, and that path is weighted by w̃_i² instead of
               w̃_i. Same expectation as the IWAE estimator, and its signal-to-noise ratio does not decay as k grows.
    The decoder's and the prior's gradients are the IWAE ones either way. The returned terms also hold the ELBO's
    (log p(x|z) averaged over the k samples, and the KL) for the training record.
    """
    posterior = model.encode(x, y)
    z = posterior.rsample(k, generator=generator)  # (k, N, D)
    log_px = model.decode(z, y).log_prob(x)
    log_pz = model.prior.log_prob(z)
    if estimator not in ("reparam", "dreg"):
        raise VaekitError(f"unknown estimator {estimator!r} for the importance-weighted bound: use reparam or dreg")
    held = posterior.detached() if estimator == "dreg" else posterior
    log_w = log_px + log_pz - held.log_prob(z)
    bound = torch.logsumexp(log_w.detach(), dim=0) - math.log(k)
    weights = normalized_weights(log_w.detach())
    if estimator == "dreg" and z.requires_grad:
        z.register_hook(lambda grad: grad * weights.unsqueeze(-1))  # type: ignore[no-untyped-call]  # w̃·w̃ = w̃²
    # Valued at the bound; its gradient is Σ_i w̃_i ∇ log w_i, which is ∇ of log-sum-exp (the IWAE estimator).
    surrogate = bound + (weights * (log_w - log_w.detach())).sum(0)
    with torch.no_grad():  # for the record only
        kl = model.prior.kl(posterior, z)
    return ElboTerms(log_px=log_px.detach().mean(0), kl=kl, bound=bound, surrogate=surrogate)


NEGLIGIBLE_WEIGHT = 1e-12


def normalized_weights(log_w: Tensor) -> Tensor:
    """w̃_i = w_i / Σ_j w_j over the k samples (dim 0), with every w̃_i below `NEGLIGIBLE_WEIGHT` set to 0.

    Such a sample moves the gradient Σ_i w̃_i ∇ log w_i by a part in 10¹² (float32 resolves a part in 10⁷), but the
    backward pass carries its w̃_i through the decoder, where products of it underflow to subnormal floats, which
    x86 CPUs compute many times slower: MNIST's IWAE k = 50 trained 2 to 3 times slower with them, k = 5 a fifth
    slower (benchmarks/iwae_speed.py measures it). Zero skips that work exactly.
    """
    weights = torch.softmax(log_w, dim=0)
    return torch.where(weights < NEGLIGIBLE_WEIGHT, 0.0, weights)


def bits_per_dim(nats_per_example: Tensor | float, dims: int) -> Tensor | float:
    """Convert a negative log-likelihood in nats per example to bits per dimension: nats / (dims · ln 2).

    The one definition for training records and evaluation alike. The nats must be those of the data as stored:
    for a density on dequantized 8-bit pixels, including the −D·log 256 of `vaekit.data.scoring.Scoring.offset`.
    """
    return nats_per_example / (dims * math.log(2))


def iwae_bound(
    model: LatentModel,
    x: Tensor,
    k: int,
    generator: Randomness = None,
    max_rows: int = 4096,
    y: Tensor | None = None,
) -> Tensor:
    """The importance-weighted bound log p(x) ≥ log (1/k) Σ_i w_i  (Burda, Grosse & Salakhutdinov 2016, eq. 8).

    k = 1 is a one-sample ELBO estimate; the bound tightens monotonically in k and reaches log p(x) as k → ∞.
    Samples are drawn in chunks of at most `max_rows` decoder evaluations (N · chunk ≤ max_rows), so memory stays
    O(max_rows · pixels) for any k; the log-sum-exp over all k weights is accumulated in float64
    (float32 on MPS). Returns (N,).
    """
    return chunked_bound(lambda samples: log_importance_weights(model, x, samples, generator, y), len(x), k, max_rows)


def chunked_bound(log_weights: Callable[[int], Tensor], n: int, k: int, max_rows: int = 4096) -> Tensor:
    """log (1/k) Σ_i w_i for n images, from `log_weights(s)`, which draws s samples' log w (s, n), called with at most
    `max_rows` rows (n · s ≤ max_rows) at a time; accumulated in float64 (float32 on MPS). Returns (n,)."""
    chunk = max(1, max_rows // n)
    partial = []  # log Σ w over each chunk, (n,) each
    for start in range(0, k, chunk):
        log_w = log_weights(min(chunk, k - start))
        partial.append(torch.logsumexp(log_w.to(accumulate_dtype(log_w.device)), dim=0))
    return torch.logsumexp(torch.stack(partial), dim=0) - math.log(k)


@dataclass(frozen=True)
class Objective:
    """A training objective as the loop sees it: the per-example terms of a batch under a config's settings, the
    name of the third term the training record keeps beside log p(x|z) and the KL (None: nothing more), and how many
    z samples per image a training step draws (what a step's memory scales with)."""

    terms: Callable[[LatentModel, Tensor, Randomness, TrainConfig, Tensor | None], ElboTerms]
    extra_term: Callable[[LatentModel, TrainConfig], str | None]
    samples: Callable[[TrainConfig], int]


def objective_of(config: TrainConfig) -> Objective:
    """The objective part a config names."""
    found: Objective = OBJECTIVES[config.objective].impl
    return found


def _elbo_extra(model: LatentModel, config: TrainConfig) -> str | None:
    """Gumbel-softmax training records the relaxed surrogate's reconstruction term beside the exact one."""
    return "relaxed_log_px" if config.estimator == "reparam" and model.posterior.relaxes else None


FREE_BITS_CLOSED_FORM = "free bits apply to a closed-form KL per unit: use --objective elbo with the standard prior"
OBJECTIVES.register(
    Part(
        "elbo",
        doc="the ELBO with `--beta`, `--warmup` and `--free-bits`; `reparam` or score-function gradients",
        requires=(
            Requirement(
                lambda c: c.estimator != "dreg",
                "the doubly reparameterized estimator is for the importance-weighted bound: add --objective iwae",
            ),
            Requirement(lambda c: c.free_bits == 0 or c.model.prior == "standard", FREE_BITS_CLOSED_FORM),
            Requirement(
                lambda c: c.estimator != "score-function-baseline" or c.samples >= 2,
                "the leave-one-out baseline needs at least 2 samples per image: add --samples 4",
            ),
        ),
        impl=Objective(
            lambda model, x, source, config, y: elbo(model, x, source, config.estimator, config.samples, y),
            _elbo_extra,
            lambda config: config.samples,
        ),
    )
)
OBJECTIVES.register(
    Part(
        "iwae",
        "importance-weighted bound with --k samples",
        doc="the importance-weighted bound with `--k` samples (Burda et al. 2016); `--estimator dreg` for the doubly "
        "reparameterized encoder gradient (Tucker et al. 2018)",
        requires=(
            Requirement(
                lambda c: c.model.latent != "categorical" and c.model.kind == "vae",
                "the importance-weighted bound needs a Gaussian posterior: use --model vae --latent gaussian (or "
                "hierarchy)",
            ),
            Requirement(lambda c: c.estimator in PATHWISE, "--objective iwae takes --estimator reparam (IWAE) or dreg"),
            Requirement(
                lambda c: c.beta == 1 and c.warmup_epochs == 0 and c.samples == 1,
                "--objective iwae has its own k samples and no KL weight: drop --beta, --warmup and --samples",
            ),
            Requirement(lambda c: c.free_bits == 0, FREE_BITS_CLOSED_FORM),
        ),
        impl=Objective(
            lambda model, x, source, config, y: importance_weighted(model, x, config.k, source, config.estimator, y),
            lambda model, config: "iwae_bound",
            lambda config: config.k,
        ),
    )
)
