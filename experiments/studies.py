"""The paper's claims, each as a study: runs that differ along one axis (``repro/study.py``).

``repro study list`` lists them, ``repro study run NAME [--preset cpu|smoke]`` trains and
evaluates every point and writes ``study.json`` with the verdict, ``repro report`` puts them first
in ``report.md``. Each design below was written before its runs (the rule is repro.study.verdict);
a claim that does not show at this scale is reported as such, never re-designed until it agrees.

Source tags are those of the project's digest of the paper (docs/paper_numbers.md; [P-code]
official code, [P-page] the authors' pages, [P-quote] the paper's text as quoted, [S-paper] a
peer paper, [S-AI] an unverified lead).

Budgets (``--dry-run`` prints each design's points, training FLOPs and a time estimate): every
``cpu`` design trains in about an hour or two on 2 CPU cores. Every point of a design shares the
design's data, steps, batch, seeds and evaluation protocol; what a point changes is in its ``set``.
"""

from __future__ import annotations

from repro.study import Comparison, Design, Point, Study


def _context_points(ns: tuple[int, ...]) -> tuple[Point, ...]:
    return tuple(Point(f"N={n}", n, (f"model.max_context={n}",)) for n in ns)


def _smoke_context(preset_ns: tuple[int, ...], latents: int, seeds=(0,)) -> Design:
    return Design(
        preset="smoke",
        common=(f"model.num_latents={latents}",),
        points=_context_points(preset_ns),
        comparisons=(Comparison(f"N={preset_ns[-1]}", f"N={preset_ns[0]}", expected=-1),),
        seeds=seeds,
        protocol=f"blocked:{latents}",
        max_examples=1,
    )


CONTEXT_CLAIM = (
    "More context at the same number of latents lowers held-out NLL, at a nearly constant cost per target: "
    "the cross-attend reads all N inputs, the latent stack's cost depends on M alone."
)
CONTEXT_SOURCE = (
    "[P-quote] abstract: Perceiver AR attends to over a hundred thousand tokens with a fixed latent stack; "
    "[S-AI] Books: 14.88 -> 14.56 perplexity from 1k to 16k context at 1024 latents (docs/paper_numbers.md §1.4)"
)
CONTEXT_PROPER = (
    "The paper's scale: contexts 1k-16k at 1,024 latents on book-length documents (PG-19, Books), "
    "models of 36-60 layers trained for ~10^5 steps, so that the extra context is learned to be used."
)
# The shared cpu recipe of the three context studies: M = 128, 1,000 steps (cosine to 1,000),
# two seeds, blocked:128 (each window scores its last 128 targets: the same target blocks at
# every N, each target seeing up to N inputs).
_CTX_COMMON = ("model.num_latents=128", "train.steps=1000", "optim.decay_steps=1000", "train.eval_every=500",
               "train.checkpoint_every=500")  # fmt: skip

STUDIES: dict[str, Study] = {}


def _add(s: Study) -> None:
    STUDIES[s.name] = s


_add(Study(
    name="context-pg19",
    claim_id="context-at-fixed-latents",
    claim=CONTEXT_CLAIM,
    source=CONTEXT_SOURCE,
    section="pg19",
    proper_test=CONTEXT_PROPER,
    designs={
        "cpu": Design(
            preset="cpu", common=_CTX_COMMON, points=_context_points((128, 512, 2048)), seeds=(0, 1),
            comparisons=(Comparison("N=2048", "N=128", expected=-1, what="context 2048 vs 128 at 128 latents"),
                         Comparison("N=2048", "N=512", expected=-1, what="context 2048 vs 512 at 128 latents")),
            protocol="blocked:128", max_examples=1,
            note="Demo books (Jane Austen): one validation novel, so every context fits in the document.",
        ),  # fmt: skip
        "smoke": _smoke_context((16, 32), 8, seeds=(0, 1)),
    },
))  # fmt: skip

_add(Study(
    name="context-imagenet64",
    claim_id="context-at-fixed-latents",
    claim=CONTEXT_CLAIM,
    source=CONTEXT_SOURCE,
    section="imagenet64",
    metric="bits_per_dim",
    metric_label="held-out bits/dim",
    proper_test=CONTEXT_PROPER + " For images: 64x64 ImageNet (12,288 sub-pixels) with context 12,288 vs less.",
    designs={
        "cpu": Design(
            preset="cpu", common=_CTX_COMMON, points=_context_points((128, 384, 769)), seeds=(0, 1),
            comparisons=(Comparison("N=769", "N=128", expected=-1, what="the whole 16x16 image vs the last 128 "
                                    "sub-pixels, at 128 latents"),),
            protocol="blocked:128", max_examples=64,
            note="16x16 demo photos: 769 tokens per image, so N=769 is the whole image; the axis ends there.",
        ),  # fmt: skip
        "smoke": _smoke_context((64, 193), 16),
    },
))  # fmt: skip

_add(Study(
    name="context-maestro",
    claim_id="context-at-fixed-latents",
    claim=CONTEXT_CLAIM,
    source=CONTEXT_SOURCE,
    section="maestro",
    metric_label="held-out nats/event",
    proper_test=CONTEXT_PROPER + " For music: MAESTRO performances (tens of thousands of events) at 4k-32k context.",
    designs={
        "cpu": Design(
            preset="cpu", common=_CTX_COMMON, points=_context_points((128, 512, 2048)), seeds=(0, 1),
            comparisons=(Comparison("N=2048", "N=128", expected=-1, what="context 2048 vs 128 at 128 latents"),),
            protocol="blocked:128",
            note="Bach chorales are short (see the document lengths): context past a piece's length cannot help.",
        ),  # fmt: skip
        "smoke": _smoke_context((16, 64), 8),
    },
))  # fmt: skip

# Equal compute: Perceiver AR at context 2048 with 128 latents, 1,000 steps, sets the budget; the
# Transformer baselines (M = N) at context 128 and at context 2048 train for the same FLOPs.
_EQ_PAR = ("model.max_context=2048", "model.num_latents=128")
_add(Study(
    name="equal-compute",
    claim_id="equal-compute",
    claim="Perceiver AR with a long context beats a Transformer trained with the same compute, whether the "
    "Transformer has the latents' short context or the same long context.",
    source="[P-page] DeepMind blog: a 60-layer Perceiver AR at context 8,192 outperforms a 42-layer Transformer-XL "
    "on a book-length task while running faster in wall-clock terms (docs/paper_numbers.md §1.4)",
    section="pg19",
    axis="training FLOPs",
    proper_test="Book-length data (PG-19 / Books) at 8k context, models of ~1B parameters, Transformer-XL's "
    "recurrence as the baseline, compute matched in TPU-hours.",
    designs={
        "cpu": Design(
            preset="cpu", common=("train.eval_every=500", "train.checkpoint_every=500"), seeds=(0,),
            points=(
                Point("PerceiverAR-N2048", 1, (*_EQ_PAR, "train.steps=1000", "optim.decay_steps=1000"),
                      series="Perceiver AR (N=2048, M=128)"),
                Point("Transformer-N128", 2, ("model.max_context=128", "model.num_latents=128"),
                      preset="cpu_transformer", series="Transformer (N=M=128)", match_flops=True),
                # Four micro-batches of 4 (the same batch of 16 and the same math): at one batch of
                # 16 its 2048 x 2048 attention needed > 21 GB and was killed (out of memory).
                Point("Transformer-N2048", 3, ("model.max_context=2048", "model.num_latents=2048",
                                               "train.grad_accum=4"),
                      preset="cpu_transformer", series="Transformer (N=M=2048)", match_flops=True),
            ),
            comparisons=(
                Comparison("PerceiverAR-N2048", "Transformer-N128", expected=-1,
                           what="Perceiver AR at 2048 vs a Transformer at the latents' context, same FLOPs"),
                Comparison("PerceiverAR-N2048", "Transformer-N2048", expected=-1,
                           what="Perceiver AR at 2048 vs a Transformer at the same context, same FLOPs"),
            ),
            protocol="blocked:128", max_examples=1,
            flops_budget="PerceiverAR-N2048", curve_points=4,
            note="One seed (the FLOPs-matched Transformer at 2048 is the costliest run); the budget is 1,000 "
            "Perceiver AR steps.",
        ),  # fmt: skip
        "smoke": Design(
            preset="smoke", seeds=(0,),
            points=(
                Point("PerceiverAR", 1, ("model.max_context=32", "model.num_latents=8")),
                Point("Transformer-N8", 2, ("model.max_context=8", "model.num_latents=8"), match_flops=True,
                      series="Transformer"),
                Point("Transformer-N32", 3, ("model.max_context=32", "model.num_latents=32"), match_flops=True,
                      series="Transformer"),
            ),
            comparisons=(Comparison("PerceiverAR", "Transformer-N8", expected=-1),
                         Comparison("PerceiverAR", "Transformer-N32", expected=-1)),
            protocol="blocked:8", max_examples=1, flops_budget="PerceiverAR", curve_points=2,
        ),  # fmt: skip
    },
    log_x=False,
))  # fmt: skip

_add(Study(
    name="context-restriction",
    claim_id="context-restriction",
    claim="Cross-attend dropout (context restriction at training time) regularises long-context models: "
    "held-out NLL is lower with it than without.",
    source="[S-AI] 0.875-0.97 on PG-19, 0.7 on music; [S-impl] 'up to 50% dropout helped prevent overfitting' "
    "(docs/paper_numbers.md §1.7, §5)",
    section="pg19",
    axis="cross-attend dropout",
    log_x=False,
    proper_test="PG-19 at 2k+ context with the paper's model size and training length, where overfitting of the "
    "long context is the issue the restriction addresses.",
    designs={
        "cpu": Design(
            preset="cpu", common=(*_CTX_COMMON, "model.max_context=2048"), seeds=(0,),
            points=tuple(Point(f"dropout={p}", p, (f"model.cross_dropout={p}",)) for p in (0.0, 0.5, 0.875)),
            comparisons=(Comparison("dropout=0.5", "dropout=0.0", expected=-1, what="dropout 0.5 vs none"),
                         Comparison("dropout=0.875", "dropout=0.0", expected=-1, what="dropout 0.875 vs none")),
            protocol="blocked:128", max_examples=1,
            note="Our cross-attend dropout masks keys (as the official encoder_dropout_prob): it saves no compute. "
            "One seed (a session's CPU time): the standard errors hold evaluation noise only; the dropout=0.0 "
            "point is context-pg19's N=2048 recipe, whose two seeds differed by 0.005 nats/token (0.047 at N=512).",
        ),  # fmt: skip
        "smoke": Design(
            preset="smoke", common=("model.max_context=32",), seeds=(0,),
            points=tuple(Point(f"dropout={p}", p, (f"model.cross_dropout={p}",)) for p in (0.0, 0.5)),
            comparisons=(Comparison("dropout=0.5", "dropout=0.0", expected=-1),),
            protocol="blocked:8", max_examples=1,
        ),  # fmt: skip
    },
))  # fmt: skip

# One trained model (every point shares its run), scored token by token through the sampler's
# KV-cached decoding with a reset fill F: a small F means the cache runs longest between resets.
_add(Study(
    name="cache-reset",
    claim_id="cache-reset",
    claim="Cached decoding degrades when the KV cache is used too long without a reset: scoring held-out text "
    "through the cache is worse with a small reset fill (long stretches between full forwards).",
    source="[P-code] sample_utils.sample_position resets the cache to half (Appendix E.3); [S-AI] Figure 11 "
    "shows quality degrading without resets (docs/paper_numbers.md §1.8)",
    section="pg19",
    axis="reset fill F (latents kept at a reset)",
    log_x=True,
    proper_test="The paper's PG-19 / music models sampled at their full context with the paper's sampler.",
    designs={
        "cpu": Design(
            preset="cpu", common=_CTX_COMMON, seeds=(0,),
            points=tuple(Point(f"F={f}", f, protocol=f"cached:{f}") for f in (8, 32, 64, 96, 120)),
            comparisons=(Comparison("F=8", "F=120", expected=1, what="reset fill 8 vs 120 (of 128 latents)"),),
            max_examples=1,
            note="One model (pg19 cpu recipe at context 512, 128 latents); the points differ in evaluation only.",
        ),  # fmt: skip
        "smoke": Design(
            preset="smoke", seeds=(0,),
            points=tuple(Point(f"F={f}", f, protocol=f"cached:{f}") for f in (2, 6)),
            comparisons=(Comparison("F=2", "F=6", expected=1),),
            max_examples=1,
        ),  # fmt: skip
    },
))  # fmt: skip

# Copy with a small latent array: M fixed at 128 while N grows (the paper's 131k model has M/N < 1 %).
_add(Study(
    name="long-copy-small-latents",
    claim_id="long-copy-small-latents",
    claim="With a latent array far smaller than the context, Perceiver AR learns to copy over long distances "
    "(>= 99.9 % of the mirrored half right).",
    source="[P-quote] copy task at distances of at least 100k tokens; [P-code] random_mirrored_131072: 1,024 "
    "latents at 131,072 inputs (docs/paper_numbers.md §1.1)",
    section="copy",
    metric="scored_token_accuracy",
    metric_label="mirrored-half token accuracy",
    higher_is_better=True,
    proper_test="Length 131,072 with 1,024 latents, 6 layers, batch 4,096 on an accelerator pod (the paper's run).",
    designs={
        "cpu": Design(
            preset="cpu",
            common=("model.num_latents=128", "data.minimum_crop_length=128", "train.steps=3000", "train.batch_size=16",
                    "data.eval_examples=64"),
            points=tuple(Point(f"N={n}", n, (f"model.max_context={n}", f"data.seq_len={n}"))
                         for n in (512, 1024, 2048)),
            comparisons=tuple(Comparison(f"N={n}", threshold=0.999, expected=1, what=f"length {n}: accuracy vs 99.9 %")
                              for n in (2048, 1024, 512)),
            protocol="blocked:128",
            note="From scratch (no curriculum), M = 128 at every length, stopping at >= 99.9 % or 3,000 steps.",
        ),  # fmt: skip
        "smoke": Design(
            preset="smoke", common=("model.num_latents=8", "data.minimum_crop_length=8"),
            points=tuple(Point(f"N={n}", n, (f"model.max_context={n}", f"data.seq_len={n}")) for n in (16, 32)),
            comparisons=(Comparison("N=32", threshold=0.999, expected=1),),
            protocol="blocked:8",
        ),  # fmt: skip
    },
))  # fmt: skip
