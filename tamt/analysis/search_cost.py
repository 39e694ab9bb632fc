"""Search cost of TAMT vs IMP as *time to equal quality* (one code path for ``tamt demo`` and
``benchmarks/search_vs_imp.py``).

For one sparsity s and one held-out loss (MLM for TAMT-MLM, KD for TAMT-KD):

1. IMP must be a baseline: its subnetwork at s has to beat OMP's (the one-shot
   mask IMP starts from) on the loss.  If it does not, IMP is under-trained at
   this budget, and no ratio is printed: against a starved IMP any ratio would
   flatter TAMT.
2. speedup = IMP's search time to reach s (its rounds up to s, measured by the
   searcher: training steps + pruning, no evaluation) / the search time TAMT
   needs to first reach IMP's final loss, read on TAMT's held-out curve (its
   evaluation grid is stated; the ratio is only as fine as that grid: the
   first grid point at or below IMP's loss is an upper bound on TAMT's time).
   The curve's step 0 is OMP's loss (TAMT starts from the OMP mask), so a
   TAMT run that matched IMP "at step 0" would mean IMP failed check 1.
3. the converse: TAMT's loss at IMP's time (the last grid point within it, or
   TAMT's final loss when TAMT finished sooner) next to IMP's loss.

Both runs must come from the same process, machine, data and evaluation
batches; the callers guarantee that.
"""
from __future__ import annotations

THIN_MARGIN = 0.02  # IMP's loss less than 2 % below OMP's: the verdict flags the ratio as weak evidence
LOSS_OF = {"tamt-mlm": "mlm_loss", "tamt-kd": "kd_loss", "tamt-mlm-kd": "kd_loss"}


def time_to_quality(method: str, sparsity: float, *, tamt_curve: list[dict], imp: dict, omp: dict,
                    loss: str | None = None) -> dict:
    """The comparison of one TAMT run with IMP at one sparsity.

    ``tamt_curve``: [{"step", "search_s", <loss>}, ...] in step order, step 0 included (OMP's loss at 0 s).
    ``imp``: {"search_s": time to reach s, <loss>: its held-out loss at s}; ``omp``: {<loss>: ...}.
    Returns a dict with ``status`` one of ``"ratio"``, ``"imp-under-trained"``, ``"not-reached"``,
    ``"no-data"``, and the numbers behind it.
    """
    loss = loss or LOSS_OF[method]
    row = {"method": method, "sparsity": float(sparsity), "loss": loss, "imp_s": imp.get("search_s"),
           "imp_loss": imp.get(loss), "omp_loss": omp.get(loss), "tamt_s_to_match": None,
           "tamt_steps_to_match": None, "speedup": None, "tamt_loss_at_imp_s": None, "tamt_final_loss": None,
           "tamt_final_s": None, "grid_steps": None}
    pts = [p for p in tamt_curve if p.get(loss) is not None and p.get("search_s") is not None]
    if not pts or row["imp_loss"] is None or row["omp_loss"] is None or not row["imp_s"]:
        return {**row, "status": "no-data"}
    steps = [p["step"] for p in pts]
    row["grid_steps"] = (steps[1] - steps[0]) if len(steps) > 1 else None
    row["tamt_final_loss"], row["tamt_final_s"] = pts[-1][loss], pts[-1]["search_s"]
    within = [p for p in pts if p["search_s"] <= row["imp_s"]]
    row["tamt_loss_at_imp_s"] = (within[-1] if within else pts[0])[loss]
    if not row["imp_loss"] < row["omp_loss"]:
        return {**row, "status": "imp-under-trained"}
    reach = next((p for p in pts if p[loss] <= row["imp_loss"]), None)
    if reach is None:
        return {**row, "status": "not-reached"}
    row["tamt_s_to_match"], row["tamt_steps_to_match"] = reach["search_s"], reach["step"]
    row["speedup"] = row["imp_s"] / reach["search_s"] if reach["search_s"] > 0 else None
    return {**row, "status": "ratio" if row["speedup"] is not None else "imp-under-trained"}


def verdict(r: dict) -> str:
    """One line a reader can act on."""
    if r["status"] == "no-data":
        return "not measured (no curve or no IMP/OMP evaluation)"
    if r["status"] == "imp-under-trained":
        return (f"IMP under-trained at this budget: its {r['loss']} {r['imp_loss']:.4f} is not below OMP's "
                f"{r['omp_loss']:.4f}, so there is no ratio")
    at = (f"at IMP's {r['imp_s']:.1f} s TAMT's {r['loss']} is {r['tamt_loss_at_imp_s']:.4f} vs IMP's "
          f"{r['imp_loss']:.4f}")
    if r["status"] == "not-reached":
        return (f"TAMT did not reach IMP's {r['loss']} {r['imp_loss']:.4f} within its {r['tamt_final_s']:.1f} s "
                f"(final {r['tamt_final_loss']:.4f}); {at}")
    grid = f", grid {r['grid_steps']} steps" if r["grid_steps"] else ""
    margin = 1 - r["imp_loss"] / r["omp_loss"]
    if margin < THIN_MARGIN:  # a baseline that barely beats OMP makes a weak yardstick: say so next to the ratio
        at += (f"; note: IMP beats OMP by only {100 * margin:.1f} % on this loss, so IMP is a thin baseline here "
               "and the ratio is weak evidence")
    return (f"TAMT reaches IMP's {r['loss']} {r['imp_loss']:.4f} after {r['tamt_steps_to_match']} steps / "
            f"{r['tamt_s_to_match']:.1f} s vs IMP's {r['imp_s']:.1f} s: {r['speedup']:.1f}x (an upper bound on "
            f"TAMT's time{grid}); {at}")


def render(rows: list[dict]) -> str:
    if not rows:
        return "(no IMP run or no TAMT curve: no search-cost comparison)"
    lines = [f"{'sparsity':>8}  {'method':<9} {'loss':<8} {'OMP':>7} {'IMP':>7} {'IMP s':>7} {'TAMT s':>7} "
             f"{'speedup':>8}"]
    for r in rows:
        f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        sp = f"{r['speedup']:.1f}x" if r["speedup"] is not None else "-"
        lines.append(f"{r['sparsity']:>8g}  {r['method']:<9} {r['loss']:<8} {f(r['omp_loss'], '7.4f')} "
                     f"{f(r['imp_loss'], '7.4f')} {f(r['imp_s'], '7.1f')} {f(r['tamt_s_to_match'], '7.1f')} "
                     f"{sp:>8}")
    lines.append("")
    lines += [f"s={r['sparsity']:g} {r['method']}: {verdict(r)}" for r in rows]
    return "\n".join(lines)
