import pytest
from conftest import synthetic_task_toml

from perserbench.errors import PerserbenchError
from perserbench.executors import execute, expected_path, is_done, plan, run_job


def test_sweep_writes_expected_files_and_resumes(tmp_path, toy_task_file):
    jobs = plan(["consensus"], [str(toy_task_file)], [0, 1], [1], ["seen"], tmp_path)
    assert len(jobs) == 2 and not any(is_done(j) for j in jobs)
    first = run_job(jobs[0])
    assert first == str(expected_path(jobs[0]))
    assert is_done(jobs[0]) and not is_done(jobs[1])
    mtime = expected_path(jobs[0]).stat().st_mtime_ns
    todo = [j for j in jobs if not is_done(j)]
    assert todo == [jobs[1]]
    execute(todo)
    assert all(is_done(j) for j in jobs)
    assert expected_path(jobs[0]).stat().st_mtime_ns == mtime  # finished run not redone


def test_a_corrupt_result_file_is_redone(tmp_path, toy_task_file):
    (job,) = plan(["consensus"], [str(toy_task_file)], [0], [1], ["seen"], tmp_path)
    expected_path(job).parent.mkdir(parents=True, exist_ok=True)
    expected_path(job).write_text("{truncated")
    assert not is_done(job)


def test_unknown_executor_and_method(tmp_path, toy_task_file):
    with pytest.raises(PerserbenchError, match="unknown executor 'slurm'"):
        execute([], "slurm")
    with pytest.raises(PerserbenchError, match="unknown method"):
        plan(["nope"], [str(toy_task_file)], [0], [1], ["seen"], tmp_path)


# A cut-down task on the bundled synthetic corpus: worker processes (spawned, or Ray's) do not
# import this test suite, so they cannot see the conftest `toy` corpus.
SMALL_SYNTHETIC = synthetic_task_toml()


def _episodes_by_method(paths):
    import json
    from pathlib import Path

    return {Path(p).name: json.loads(Path(p).read_text())["episodes"] for p in paths}


# Ray gives the sequential results too: tests/test_ray.py checks it, with a worker killed mid-sweep.
@pytest.mark.parametrize("executor", ["process"])
def test_parallel_executors_give_the_sequential_results(tmp_path, executor):
    task = tmp_path / "small.toml"
    task.write_text(SMALL_SYNTHETIC)
    args = (["consensus", "oracle"], [str(task)], [0], [1], ["unseen"])
    sequential = execute(plan(*args, tmp_path / "sequential"))
    parallel = execute(plan(*args, tmp_path / executor), executor, workers=2)
    assert len(parallel) == 2
    assert _episodes_by_method(parallel) == _episodes_by_method(sequential)
