"""The public-API part of bench/bench_kernels.py runs, checks every public path against the kernels and
reports each target (a small, fast configuration)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_kernels  # noqa: E402


def test_public_api_part_runs_and_agrees_with_the_kernels(tmp_path):
    out = tmp_path / "kernels.json"
    res = bench_kernels.main(["--public-api", "--shapes", "a", "--batches", "32", "--threads", "1",
                              "--target-s", "0.002", "--out", str(out)])
    saved = json.loads((tmp_path / "kernels_public.json").read_text())
    assert saved["checks"] == res["checks"] and len(res["checks"]) == 1
    errors = res["checks"][0]["max_rel_err"]
    assert {"ops forward", "ops backward", "ops sddmm", "SparseLinear gradient"} <= set(errors)
    assert max(errors.values()) <= 1e-4
    impls = {r["impl"] for r in res["records"]}
    assert {"kernel", "ops scipy-W C", "ops prepared C", "ops prepared F", "SparseLinear C", "SparseLinear F",
            "scipy best"} <= impls
    assert all(r["median_s"] > 0 for r in res["records"])
    # every target of the shape measured gets a ratio (the 0.8x / 2x ones at B=32; the layer ones need B=128)
    measured = [t for t in res["targets"] if t["ratio"] is not None]
    assert len(measured) == 6 and all(t["met"] in (True, False) for t in measured)


def test_kernel_table_times_the_bfloat16_rows(tmp_path):
    """float32: each gathering kernel also runs on bfloat16 copies of its rows, against the float32 rows."""
    res = bench_kernels.main(["--quick", "--shapes", "a", "--batches", "32", "--dtypes", "float32", "--threads",
                              "1", "--target-s", "0.002", "--out", str(tmp_path / "k.json")])
    bf = {r["kernel"]: r for r in res["records"] if r["impl"] == "bf16 rows"}
    assert set(bf) == {"forward", "backward", "sddmm", "sddmm+update"}
    for r in bf.values():
        assert r["median_s"] > 0 and r["logical_gbs"] > 0 and r["speedup"]["f32-rows"] > 0
    f32 = {r["kernel"]: r for r in res["records"] if r["impl"] == "set_cy" and r["batch"] == 32}
    # the same measured time moves fewer logical bytes with 2-byte rows
    ratio = (bf["forward"]["logical_gbs"] * bf["forward"]["median_s"]) / (
        f32["forward"]["logical_gbs"] * f32["forward"]["median_s"])
    assert 0.5 < ratio < 1.0


def test_compare_builds_times_two_builds_interleaved(tmp_path):
    """bench/compare_builds.py loads another build of the extension beside the installed one (here a copy of
    it) and times both on the same calls: same results, so similar times."""
    import shutil

    import compare_builds

    from set_cy import _kernels

    other = tmp_path / os.path.basename(_kernels.__file__)
    shutil.copy(_kernels.__file__, other)
    for gathered in ("float32", "bfloat16"):
        rows = compare_builds.main(["--other", str(other), "--shapes", "a", "--batches", "32", "--threads", "1",
                                    "--rounds", "2", "--repeats", "1", "--gathered", gathered])
        assert [r["kernel"] for r in rows] == list(compare_builds.KERNELS)
        assert all(r["other_s"] > 0 and r["this_s"] > 0 for r in rows)


def test_kernel_table_times_chunked_loops_against_unchunked(tmp_path):
    """Where a shape's rows run chunked (see _kernels.set_chunking), each kernel is also timed with chunking off;
    the run's correctness checks use the chunked kernels. Chunking is forced here on the small shape (a)."""
    from set_cy import _kernels

    saved = _kernels.get_chunking()
    _kernels.set_chunking(32 * 4 * 50, 0, 0)  # chunks of 50 of the 1000 input rows at batch 32
    try:
        res = bench_kernels.main(["--quick", "--shapes", "a", "--batches", "32", "--dtypes", "float32", "--threads",
                                  "1", "--target-s", "0.002", "--out", str(tmp_path / "k.json")])
    finally:
        _kernels.set_chunking(*saved)
    off = {r["kernel"] for r in res["records"] if r["impl"] == "unchunked"}
    assert off == {"forward", "backward", "bwd-scatter", "sddmm", "sddmm+update"}
    on = [r for r in res["records"] if r["impl"] == "set_cy" and r["batch"] == 32]
    assert len(on) == 5 and all(r["speedup"]["unchunked"] > 0 for r in on)
    assert all(err < 1e-4 for c in res["checks"] for err in c["max_rel_err"].values())
