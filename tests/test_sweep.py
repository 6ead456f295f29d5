import pytest

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
