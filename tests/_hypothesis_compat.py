"""``hypothesis`` when installed, else a small fixed-seed stand-in so property tests still run.

The GPU machine may lack hypothesis; a module-level ``from hypothesis import
...`` there made collection fail and no GPU test ran.  Test files import
``given``, ``settings``, ``st`` and ``HealthCheck`` from here instead.  Without
hypothesis each ``@given`` test runs ``max_examples`` examples drawn from a
generator seeded by the test's name (same examples every run, bounds included
with some probability, no shrinking); a failure names the example.  Only the
strategies the suite uses exist: integers, floats, lists, tuples, sampled_from.
"""
from __future__ import annotations

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ModuleNotFoundError:
    HAVE_HYPOTHESIS = False

    import functools
    import inspect
    import random
    from types import SimpleNamespace

    FALLBACK_EXAMPLES = 10

    class _Strategy:
        def __init__(self, draw):
            self.draw = draw

    def _integers(min_value=0, max_value=2**31 - 1):
        def draw(rng):
            r = rng.random()
            return min_value if r < 0.05 else max_value if r < 0.1 else rng.randint(min_value, max_value)

        return _Strategy(draw)

    def _floats(min_value=0.0, max_value=1.0, **_):
        def draw(rng):
            r = rng.random()
            return min_value if r < 0.05 else max_value if r < 0.1 else rng.uniform(min_value, max_value)

        return _Strategy(draw)

    def _lists(elements, min_size=0, max_size=8):
        return _Strategy(lambda rng: [elements.draw(rng) for _ in range(rng.randint(min_size, max_size))])

    def _tuples(*elements):
        return _Strategy(lambda rng: tuple(e.draw(rng) for e in elements))

    def _sampled_from(values):
        values = list(values)
        return _Strategy(lambda rng: rng.choice(values))

    st = SimpleNamespace(integers=_integers, floats=_floats, lists=_lists, tuples=_tuples, sampled_from=_sampled_from)
    HealthCheck = SimpleNamespace(function_scoped_fixture="function_scoped_fixture", too_slow="too_slow")

    def settings(max_examples: int = FALLBACK_EXAMPLES, **_):
        def deco(fn):
            fn._fallback_examples = max_examples
            return fn

        return deco

    def given(**strategies):
        def deco(fn):
            sig = inspect.signature(fn)

            @functools.wraps(fn)
            def run(*args, **kwargs):
                rng = random.Random(f"{fn.__module__}.{fn.__qualname__}")
                for i in range(getattr(run, "_fallback_examples", FALLBACK_EXAMPLES)):
                    example = {k: s.draw(rng) for k, s in strategies.items()}
                    try:
                        fn(*args, **kwargs, **example)
                    except Exception as exc:
                        raise AssertionError(f"falsifying example #{i} (fixed-seed sample, hypothesis not "
                                             f"installed): {example}") from exc

            # pytest sees only the remaining (fixture / parametrize) arguments
            run.__signature__ = sig.replace(parameters=[p for n, p in sig.parameters.items() if n not in strategies])
            return run

        return deco

__all__ = ["HAVE_HYPOTHESIS", "HealthCheck", "given", "settings", "st"]
