"""Time to equal quality (tamt.analysis.search_cost): the one code path of the demo and search_vs_imp."""
import pytest

from tamt.analysis.search_cost import render, time_to_quality, verdict

CURVE = [{"step": 0, "search_s": 0.0, "kd_loss": 0.30}, {"step": 10, "search_s": 2.0, "kd_loss": 0.20},
         {"step": 20, "search_s": 4.0, "kd_loss": 0.12}, {"step": 30, "search_s": 6.0, "kd_loss": 0.10}]


def test_speedup_is_imp_time_over_tamt_time_to_first_reach_imp_loss():
    r = time_to_quality("tamt-kd", 0.7, tamt_curve=CURVE, imp={"search_s": 10.0, "kd_loss": 0.15},
                        omp={"kd_loss": 0.30})
    assert r["status"] == "ratio" and r["tamt_steps_to_match"] == 20 and r["tamt_s_to_match"] == 4.0
    assert r["speedup"] == pytest.approx(2.5) and r["grid_steps"] == 10
    # the converse: TAMT's loss at IMP's time (its curve ended sooner: the final point)
    assert r["tamt_loss_at_imp_s"] == 0.10
    assert "2.5x" in verdict(r) and "2.5x" in render([r])


def test_imp_that_does_not_beat_omp_gives_no_ratio():
    r = time_to_quality("tamt-kd", 0.7, tamt_curve=CURVE, imp={"search_s": 10.0, "kd_loss": 0.31},
                        omp={"kd_loss": 0.30})
    assert r["status"] == "imp-under-trained" and r["speedup"] is None
    assert "IMP under-trained at this budget" in verdict(r)
    assert "-" in render([r]).splitlines()[1].split()[-1]


def test_not_reached_and_the_converse_at_imp_time():
    r = time_to_quality("tamt-kd", 0.7, tamt_curve=CURVE, imp={"search_s": 3.0, "kd_loss": 0.05},
                        omp={"kd_loss": 0.30})
    assert r["status"] == "not-reached" and r["speedup"] is None
    assert r["tamt_loss_at_imp_s"] == 0.20  # the last grid point within IMP's 3 s
    assert "did not reach" in verdict(r)


def test_mlm_loss_for_tamt_mlm_and_missing_data():
    curve = [{"step": 0, "search_s": 0.0, "mlm_loss": 7.0}, {"step": 5, "search_s": 1.0, "mlm_loss": 6.0}]
    r = time_to_quality("tamt-mlm", 0.5, tamt_curve=curve, imp={"search_s": 4.0, "mlm_loss": 6.5},
                        omp={"mlm_loss": 7.0})
    assert r["loss"] == "mlm_loss" and r["speedup"] == pytest.approx(4.0)
    r = time_to_quality("tamt-mlm", 0.5, tamt_curve=[], imp={"search_s": 4.0, "mlm_loss": 6.5}, omp={"mlm_loss": 7})
    assert r["status"] == "no-data" and "not measured" in verdict(r)


def test_a_ratio_against_an_imp_that_barely_beats_omp_is_flagged():
    r = time_to_quality("tamt-kd", 0.7, tamt_curve=CURVE, imp={"search_s": 10.0, "kd_loss": 0.295},
                        omp={"kd_loss": 0.30})
    assert r["status"] == "ratio" and "thin baseline" in verdict(r)
    r = time_to_quality("tamt-kd", 0.7, tamt_curve=CURVE, imp={"search_s": 10.0, "kd_loss": 0.15},
                        omp={"kd_loss": 0.30})
    assert "thin baseline" not in verdict(r)
