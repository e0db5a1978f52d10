"""Orchestration above eval/ and reports/: ablation sweeps, job launchers and benchmarks."""
