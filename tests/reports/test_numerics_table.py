"""The report's numerics table: what decided the runs' bits, and which fields differ between them."""
from __future__ import annotations

import json

from fake_runs import make_run
from reports.bootstrap import BootstrapSettings
from reports.build import build_report

FAST = BootstrapSettings(replicates=200, fid_replicates=40)
STATE = {"mode": "pinned", "cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC", "torch_cpu_capability": "AVX2",
         "onednn_isa": "Intel AVX2", "mkl_cbwr": "OFF", "torch_threads": 1, "env.OMP_NUM_THREADS": "1",
         "cuda_device": None}


def _set_numerics(run, **changes):
    path = run / "eval" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["numerics"] = {**STATE, **changes}
    path.write_text(json.dumps(metrics))


def test_the_report_prints_the_numerics_and_names_the_fields_that_differ(tmp_path, real_stats):
    root = tmp_path / "runs"
    spade = make_run(root, "spade", 0, quality=0.3, real_stats=real_stats)
    concat = make_run(root, "concat", 0, quality=0.2, real_stats=real_stats)
    _set_numerics(spade)
    _set_numerics(concat, mode="native", onednn_isa="Intel AVX-512", **{"env.OMP_NUM_THREADS": None})
    md = build_report([root], tmp_path / "out", settings=FAST, figures=False, progress=False)["markdown"].read_text()
    table = md[md.index("### Numerics"):]
    assert "| cpu_model | AMD EPYC |" in table and "| torch_threads | 1 |" in table
    assert "| mode | differs (below) |" in table and "| onednn_isa | differs (below) |" in table
    assert "cuda_device" not in table.split("Fields that differ")[0]   # no run has a value: not shown
    differ = table[table.index("Fields that differ"):].splitlines()[0]
    assert "`mode` (concat/seed0: native, spade/seed0: pinned)" in differ or \
        "`mode` (spade/seed0: pinned, concat/seed0: native)" in differ
    assert "`onednn_isa`" in differ and "`env.OMP_NUM_THREADS`" in differ and "`cpu_model`" not in differ

    _set_numerics(concat)
    md = build_report([root], tmp_path / "out2", settings=FAST, figures=False, progress=False)["markdown"].read_text()
    assert "Every recorded numerics field is the same for all runs." in md
