"""--gpus-per-pair N: inside a submitit job of N tasks, each task exports submitit's torch
distributed environment, and the trainer's torchrun path reads its rank and world size."""
from __future__ import annotations

import os

import pytest

from runners.launch import _distributed_rank
from spade_bench.distributed import launched_by_torchrun

pytest.importorskip("submitit")

DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _clear_dist_env(monkeypatch) -> None:
    """Unset the torchrun variables, and have monkeypatch unset what the test exports."""
    for name in DIST_VARS:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_second_task_of_a_two_task_local_job_becomes_rank_1_of_2(monkeypatch):
    _clear_dist_env(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")   # a local slot's two GPUs
    # What submitit's local controller sets for task 1 of job 4242 (submitit/local/local.py).
    for name, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "4242", "SUBMITIT_LOCAL_NTASKS": "2",
                        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0",
                        "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1"}.items():
        monkeypatch.setenv(name, value)
    assert not launched_by_torchrun()
    assert _distributed_rank() == 1
    assert launched_by_torchrun()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
    assert os.environ["MASTER_ADDR"] and 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
    # Each rank picks cuda:LOCAL_RANK among the slot's GPUs: the visible set is left alone.
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"


def test_single_task_job_stays_single_process(monkeypatch):
    _clear_dist_env(monkeypatch)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4243")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")
    assert _distributed_rank() == 0 and not launched_by_torchrun()


def test_the_exported_variables_are_gone_after_the_tests():
    assert not any(name in os.environ for name in DIST_VARS)
